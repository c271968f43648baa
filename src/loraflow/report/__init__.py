"""The comparison table with its statistics, and the report figures."""
