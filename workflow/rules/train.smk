# Supervised stages (src/mgsd/train/sft.py): the scratch backbone's stage 0 (`symbolic_pretrain`,
# its output is the "base" model), grounding (MGSD stage 1), the direct-SFT baseline and the
# grounding_sft ablation. The last three are one rule each from SFT_INITS (method -> the model
# it starts from); the method's name is its config section and its stage.


# The training log is written in the work folder and copied to the output on success
# (--final-log): Snakemake deletes the outputs of a failed job, and a job stopped by Slurm
# (exit 75) must resume with its log whole. `exec`: the trainer is the job's process, so it dies
# with the job (a killed wrapper shell would leave it running and writing).
SFT_SHELL = (
    "exec {params.launch} train-sft --stage {params.stage} --init {params.init:q}"
    " --train {input.train:q} --val {input.val:q} --config {params.cfg:q}"
    " --prompt-style {params.style} --out {output.model:q} --metrics {output.metrics:q}"
    " --log {params.work:q}/train_log.jsonl --final-log {output.log:q} --work {params.work:q}"
    " > {log:q} 2>&1"
)


# Keep the best candidate of a sweep on validation (src/mgsd/train/select.py): the rules below.
SELECT_SHELL = (
    "mgsd select --candidates {params.candidates:q} --metric {params.metric:q}"
    " --keys {params.swept_keys} --out {params.out:q} > {log:q} 2>&1"
)


rule scratch_init:
    """Scratch backbones: a Qwen3-VL model with random weights and an offline processor."""
    output:
        directory(f"{ROOT}/models/scratch/model"),
    log:
        f"{ROOT}/logs/models/scratch_init.log",
    benchmark:
        f"{ROOT}/benchmarks/models/scratch_init.tsv"
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **cpu_resources(CFG, "symbolic_pretrain"),
    params:
        cfg=section_json(CFG.backbone.scratch),
        image_size=CFG.data.image_size,
    shell:
        "mgsd build-scratch --config {params.cfg:q} --image-size {params.image_size}"
        " --out {output:q} > {log:q} 2>&1"


rule symbolic_pretrain:
    """Stage 0 of a scratch backbone: the mix of tasks that makes the base model."""
    input:
        init=f"{ROOT}/models/scratch/model",
        train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
        val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
    output:
        model=directory(f"{ROOT}/models/base/model"),
        metrics=f"{ROOT}/models/base/metrics.json",
        log=f"{ROOT}/models/base/train_log.jsonl",
    log:
        f"{ROOT}/logs/models/base.log",
    benchmark:
        f"{ROOT}/benchmarks/models/base.tsv"
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **gpu_resources(CFG, "symbolic_pretrain"),
    params:
        stage="symbolic_pretrain",
        cfg=section_json(CFG.symbolic_pretrain),
        init=lambda wc, input: input.init,
        style=CFG.backbone.prompt_style,
        work=f"{ROOT}/resume/base",
        launch=launcher(CFG, "symbolic_pretrain"),
    shell:
        SFT_SHELL


for _method, _init in SFT_INITS.items():
    if (
        getattr(CFG, _method) is None
    ):  # an optional section (grounding_sft) not configured
        continue
    # a swept stage trains one candidate per setting under sweep/<c>/ and keeps the best one on
    # validation (mgsd select); otherwise the rule writes the method's folder directly
    _out = (
        f"{ROOT}/models/{_method}/sweep/{{cand}}"
        if swept(CFG, _method)
        else f"{ROOT}/models/{_method}"
    )
    _work = (
        f"{ROOT}/resume/{_method}/{{cand}}"
        if swept(CFG, _method)
        else f"{ROOT}/resume/{_method}"
    )
    _name = f"{_method}/{{cand}}" if swept(CFG, _method) else _method

    rule:
        """A supervised stage (grounding, sft_direct, grounding_sft) or one of its sweep candidates."""
        name:
            f"{_method}_candidate" if swept(CFG, _method) else _method
        input:
            init=model_inputs(CFG, _init),
            train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
            val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
        output:
            model=directory(f"{_out}/model"),
            metrics=f"{_out}/metrics.json",
            log=f"{_out}/train_log.jsonl",
        log:
            f"{ROOT}/logs/models/{_name}.log",
        benchmark:
            f"{ROOT}/benchmarks/models/{_name}.tsv"
        wildcard_constraints:
            cand="c[0-9]+",
        conda:
            "../../envs/mgsd.yaml"
        resources:
            **gpu_resources(CFG, _method),
        params:
            stage=_method,
            cfg=(
                lambda wc, m=_method: (
                    candidate_config(CFG, m, wc.cand)
                    if swept(CFG, m)
                    else section_json(getattr(CFG, m))
                )
            ),
            init=lambda wc, i=_init: model_ref(CFG, i),
            style=CFG.backbone.prompt_style,
            work=lambda wc, w=_work: w.format(cand=getattr(wc, "cand", "")),
            launch=launcher(CFG, _method),
        shell:
            SFT_SHELL


# Every swept stage keeps the candidate with the best validation success (mgsd select): a
# supervised stage for its own method, distillation for mgsd and RL for grpo (SWEPT), whose
# ablations, followers and replicates then read the chosen settings (<method>/config.json).
for _stage in CFG.sweep:
    _swept = SWEPT.get(_stage, _stage)

    rule:
        """The candidate of a swept stage with the best validation success, and its settings."""
        name:
            f"{_stage}_select"
        input:
            [
                f"{ROOT}/models/{_swept}/sweep/{c}/{f}"
                for c in candidates(CFG, _stage)
                for f in ("model", "metrics.json", "train_log.jsonl")
            ],
        output:
            model=directory(f"{ROOT}/models/{_swept}/model"),
            metrics=f"{ROOT}/models/{_swept}/metrics.json",
            log=f"{ROOT}/models/{_swept}/train_log.jsonl",
            chosen=f"{ROOT}/models/{_swept}/config.json",
            sweep=f"{ROOT}/models/{_swept}/sweep.json",
        log:
            f"{ROOT}/logs/models/{_swept}_select.log",
        localrule: True
        params:
            candidates=[
                f"{ROOT}/models/{_swept}/sweep/{c}" for c in candidates(CFG, _stage)
            ],
            metric=SELECT_ON[_stage],
            swept_keys=" ".join(CFG.sweep[_stage]),
            out=f"{ROOT}/models/{_swept}",
        shell:
            SELECT_SHELL
