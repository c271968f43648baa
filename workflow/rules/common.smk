# Helpers shared by the rules. No heavy imports here: this file is parsed on every invocation.

wildcard_constraints:
    run="|".join(sorted(RUNS)),
