# On-policy distillation from a symbolic teacher (src/mgsd/train/distill.py): MGSD stage 2 and
# its ablations. Each method's (initial weights, teacher, plan, loss) is in DISTILL_SETUPS.
#
# models/<method>/ is the method itself; models/<method>-seed<k>/ its replicate with the seed
# + k (config `replicates`). With `sweep.distill`, mgsd trains one candidate per setting under
# models/mgsd/sweep/<c>/ and keeps the best on validation (mgsd select); its ablations and every
# replicate then train with the chosen settings (models/mgsd/config.json), so that each
# ablation changes one thing only.

DISTILL_NAMES = "|".join(DISTILL_SETUPS)


DISTILL_SHELL = (  # as in train.smk: exec, and the live log published on success
    "exec {params.launch} distill --method {params.method} --init {params.init:q}"
    " --teacher {params.teacher:q} {params.plan} --loss {params.loss}"
    " --train {input.train:q} --val {input.val:q} --config {params.cfg:q}"
    " --seed-offset {params.seed_offset}"
    " --prompt-style {params.style} --out {output.model:q} --metrics {output.metrics:q}"
    " --log {params.work:q}/train_log.jsonl --final-log {output.log:q} --work {params.work:q}"
    " > {log:q} 2>&1"
)
DISTILL_PARAMS = dict(
    method=lambda wc: split_replicate(wc.method)[0],
    init=lambda wc: model_ref(CFG, distill_setup(wc.method)[0]),
    teacher=lambda wc: model_ref(CFG, distill_setup(wc.method)[1]),
    plan=lambda wc: "--teacher-sees-plan" if distill_setup(wc.method)[2] else "",
    loss=lambda wc: distill_setup(wc.method)[3],
    style=CFG.backbone.prompt_style,
    launch=launcher(CFG, "distill"),
)


rule distill:
    """On-policy distillation of a method or a replicate from its symbolic teacher."""
    input:
        models=lambda wc: model_inputs(CFG, *distill_setup(wc.method)[:2]),
        chosen=lambda wc: chosen_config(CFG, "distill", wc.method),
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
        # with a sweep, mgsd's own folder is written by distill_select
        method=(
            f"(?!{SWEPT_DISTILL}/)({DISTILL_NAMES})({REPLICATE}[0-9]+)?"
            if swept(CFG, "distill")
            else f"({DISTILL_NAMES})({REPLICATE}[0-9]+)?"
        ),
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **gpu_resources(CFG, "distill"),
    params:
        **DISTILL_PARAMS,
        cfg=lambda wc: config_arg(CFG, "distill", wc.method),
        seed_offset=lambda wc: split_replicate(wc.method)[1],
        work=lambda wc: f"{ROOT}/resume/{wc.method}",
    shell:
        DISTILL_SHELL


if swept(CFG, "distill"):

    rule distill_candidate:
        """One candidate setting of mgsd's distillation sweep, trained on its own."""
        input:
            models=lambda wc: model_inputs(CFG, *distill_setup(wc.method)[:2]),
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
            method=SWEPT_DISTILL,
            cand="c[0-9]+",
        conda:
            "../../envs/mgsd.yaml"
        resources:
            **gpu_resources(CFG, "distill"),
        params:
            **DISTILL_PARAMS,
            cfg=lambda wc: candidate_config(CFG, "distill", wc.cand),
            seed_offset=0,
            work=lambda wc: f"{ROOT}/resume/{wc.method}/{wc.cand}",
        shell:
            DISTILL_SHELL
