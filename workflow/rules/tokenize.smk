rule tokenize:
    """Token ids + assistant-only label masks for all splits, once, shared by every grid point."""
    input:
        model_dir=rules.base_model.output.out_dir,
        train=rules.split.output.out_train,
        val=rules.split.output.out_val,
        test=rules.split.output.out_test,
    output:
        out_train=f"{R}/tokens/train.npz",
        out_val=f"{R}/tokens/val.npz",
        out_test=f"{R}/tokens/test.npz",
        meta_path=f"{R}/tokens/meta.json",
    log:
        f"{R}/logs/tokenize.log",
    benchmark:
        f"{R}/benchmarks/tokenize.tsv"
    conda:
        "../envs/data.yaml"
    params:
        hp=settings(max_length=config["tokenize"]["max_length"], overlong=config["tokenize"]["overlong"]),
    script:
        "../scripts/tokenize.py"
