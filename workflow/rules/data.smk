# Datasets: one Parquet file per (puzzle, split); see src/mgsd/data/generate.py. The order of
# the splits (which one excludes which) is in mgsd.workflow.data_excludes.


rule data_split:
    """One (puzzle, split) Parquet file: generated instances, or a checked benchmark test set."""
    input:
        exclude=lambda wc: data_excludes(CFG, wc.puzzle, wc.split),
    output:
        f"{ROOT}/data/{{puzzle}}/{{split}}.parquet",
    log:
        f"{ROOT}/logs/data/{{puzzle}}_{{split}}.log",
    benchmark:
        f"{ROOT}/benchmarks/data/{{puzzle}}_{{split}}.tsv"
    wildcard_constraints:
        puzzle=one_of(CFG.data.puzzles),
        split="train|val|test",
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **cpu_resources(CFG, "data"),
    params:
        p=lambda wc: data_params(CFG, wc.puzzle, wc.split),
    shell:
        "mgsd generate --puzzle {wildcards.puzzle:q} --split {wildcards.split}"
        " {params.p[options]} --exclude {input.exclude:q} --out {output:q} --no-progress"
        " > {log:q} 2>&1"
