# The RL baseline (src/mgsd/train/rl.py): GRPO from the task reward, from the model RL_INITS names
# (grpo: grounding, in place of distillation; grpo_only: the base). models/<method>-seed<k>/ is a
# replicate with the seed + k (config `replicates`), as for distillation. With `sweep.rl`, grpo
# trains one candidate per setting under models/grpo/sweep/<c>/ and keeps the best on validation
# (mgsd select); grpo_only and every replicate then train with the chosen settings
# (models/grpo/config.json).

RL_NAMES = "|".join(RL_INITS)


RL_SHELL = (  # as in train.smk: exec, and the live log published on success
    "exec {params.launch} rl --method {params.method} --init {params.init:q}"
    " --train {input.train:q} --val {input.val:q} --config {params.cfg:q}"
    " --seed-offset {params.seed_offset} --prompt-style {params.style}"
    " --out {output.model:q} --metrics {output.metrics:q}"
    " --log {params.work:q}/train_log.jsonl --final-log {output.log:q} --work {params.work:q}"
    " > {log:q} 2>&1"
)
RL_PARAMS = dict(
    method=lambda wc: split_replicate(wc.method)[0],
    init=lambda wc: model_ref(CFG, RL_INITS[split_replicate(wc.method)[0]]),
    style=CFG.backbone.prompt_style,
    launch=launcher(CFG, "rl"),
)


rule rl:
    """GRPO of a method or a replicate from its initial model (also its KL reference)."""
    input:
        models=lambda wc: model_inputs(CFG, RL_INITS[split_replicate(wc.method)[0]]),
        chosen=lambda wc: chosen_config(CFG, "rl", wc.method),
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
        # with a sweep, grpo's own folder is written by rl_select
        method=(
            f"(?!{SWEPT_RL}/)({RL_NAMES})({REPLICATE}[0-9]+)?"
            if swept(CFG, "rl")
            else f"({RL_NAMES})({REPLICATE}[0-9]+)?"
        ),
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **gpu_resources(CFG, "rl"),
    params:
        **RL_PARAMS,
        cfg=lambda wc: config_arg(CFG, "rl", wc.method),
        seed_offset=lambda wc: split_replicate(wc.method)[1],
        work=lambda wc: f"{ROOT}/resume/{wc.method}",
    shell:
        RL_SHELL


if swept(CFG, "rl"):

    rule rl_candidate:
        """One candidate setting of grpo's RL sweep, trained on its own."""
        input:
            models=lambda wc: model_inputs(CFG, RL_INITS[wc.method]),
            train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
            val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
        output:
            model=directory(f"{ROOT}/models/{{method}}/sweep/{{cand}}/model"),
            metrics=f"{ROOT}/models/{{method}}/sweep/{{cand}}/metrics.json",
            log=f"{ROOT}/models/{{method}}/sweep/{{cand}}/train_log.jsonl",
        log:
            f"{ROOT}/logs/models/{{method}}/{{cand}}.log",
        benchmark:
            f"{ROOT}/benchmarks/models/{{method}}/{{cand}}.tsv"
        wildcard_constraints:
            method=SWEPT_RL,
            cand="c[0-9]+",
        conda:
            "../../envs/mgsd.yaml"
        resources:
            **gpu_resources(CFG, "rl"),
        params:
            **RL_PARAMS,
            cfg=lambda wc: candidate_config(CFG, "rl", wc.cand),
            seed_offset=0,
            work=lambda wc: f"{ROOT}/resume/{wc.method}/{wc.cand}",
        shell:
            RL_SHELL
