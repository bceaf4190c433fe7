# The RL baseline (src/mgsd/train/rl.py): GRPO from the task reward, from the model RL_INITS names
# (grpo: grounding, in place of distillation; grpo_only: the base). models/<method>-seed<k>/ is a
# replicate with the seed + k (config `replicates`), as for distillation.

RL_NAMES = "|".join(RL_INITS)


rule rl:
    """GRPO of a method or a replicate from its initial model (also its KL reference)."""
    input:
        models=lambda wc: model_inputs(CFG, RL_INITS[split_replicate(wc.method)[0]]),
        train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
        val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
    output:
        model=directory(f"{ROOT}/models/{{method}}/model"),
        metrics=f"{ROOT}/models/{{method}}/metrics.json",
        log=f"{ROOT}/models/{{method}}/train_log.jsonl",
    log:
        f"{ROOT}/logs/models/{{method}}.log",
    benchmark:
        f"{ROOT}/benchmarks/models/{{method}}.tsv"
    wildcard_constraints:
        method=f"({RL_NAMES})({REPLICATE}[0-9]+)?",
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **gpu_resources(CFG, "rl"),
    params:
        method=lambda wc: split_replicate(wc.method)[0],
        init=lambda wc: model_ref(CFG, RL_INITS[split_replicate(wc.method)[0]]),
        cfg=section_json(CFG.rl) if CFG.rl else "",
        seed_offset=lambda wc: split_replicate(wc.method)[1],
        style=CFG.backbone.prompt_style,
        launch=launcher(CFG, "rl"),
        work=lambda wc: f"{ROOT}/resume/{wc.method}",
    shell:  # as in train.smk: exec, and the live log published on success
        "exec {params.launch} rl --method {params.method} --init {params.init:q}"
        " --train {input.train:q} --val {input.val:q} --config {params.cfg:q}"
        " --seed-offset {params.seed_offset} --prompt-style {params.style}"
        " --out {output.model:q} --metrics {output.metrics:q}"
        " --log {params.work:q}/train_log.jsonl --final-log {output.log:q} --work {params.work:q}"
        " > {log:q} 2>&1"
