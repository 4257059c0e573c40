"""generate.py's work: sample tunes from a run's model, judge them with abc2midi, measure them against real tunes,
write them for people (text, ABC, MIDI, SVG, WAV, index.html) and log everything to the run in MLflow."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
import torch

from abcmusic.notation.music_metrics import summarise, tune_metrics
from abcmusic.notation.validity import Verdict, reason_counts, valid_fraction, validate_tune, validate_tunes
from abcmusic.data.copy_index import CopyIndex, copy_summary
from abcmusic.data.dataset_dir import read_manifest
from abcmusic.data.remote import local_dataset
from abcmusic.errors import UserError
from abcmusic.generate import html_report
from abcmusic.generate.prompts import encode_prompt, header_and_first_bar, read_prompts_file, split_tunes
from abcmusic.generate.render import audio_renderer, render_svg, render_wav
from abcmusic.generate.run_model import LoadedModel, RunInfo, find_run, finished_runs_with_models, load_model
from abcmusic.generate.sampling import SamplingConfig, lead_ins, sample
from abcmusic.publish import publish_dir, remove_stale_staging, staging_dir
from abcmusic.tools import require
from abcmusic.tracking import mlflow_store
from abcmusic.tracking.metric_names import samples_key

SAMPLES_ARTIFACT = "samples"


@dataclass(frozen=True)
class GenerateOptions:
    project_dir: Path
    run: str = "best"  # "best", an MLflow run id, or a registered model's models:/NAME@ALIAS
    sweep: str | None = None  # restrict --run best to this sweep (MLflow experiment)
    num: int = 12  # half unconditional (rounded up), half conditional
    prompts_file: Path | None = None
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=2048, temperature=1.0)
    lead_in: int = 32  # tokens of a model-written tune ending each sample starts after; 0 starts cold (sampling.py)
    out: Path | None = None
    audio: bool = False
    reference_tunes: int = 200  # real test tunes judged by the same validator, for the reference rate
    render: bool = True  # write .abc/.mid/.svg/.wav and index.html (off for the per-run files of --sweep)


@dataclass(frozen=True)
class GeneratedSample:
    number: int
    kind: str  # "unconditional" or "conditional"
    prompt: str
    text: str  # the whole tune: prompt + generated characters
    new_tokens: int
    truncated: bool
    verdict: Verdict


@dataclass(frozen=True)
class Reference:
    """The dataset's real tunes measured the way samples are: the bar samples are compared against."""
    valid_fraction: float
    n_tunes: int
    music: dict[str, float]
    copying: dict[str, float]
    copy_index: CopyIndex


def split_counts(num: int) -> tuple[int, int]:
    unconditional = num - num // 2
    return unconditional, num - unconditional


def conditional_prompts(options: GenerateOptions, loaded: LoadedModel, dataset: Path, count: int) -> list[str]:
    if count == 0:
        return []
    if options.prompts_file is not None:
        prompts = read_prompts_file(options.prompts_file)
        for i, prompt in enumerate(prompts, start=1):
            encode_prompt(prompt, loaded.vocab, f"prompt {i} of {options.prompts_file}")
        return [prompts[i % len(prompts)] for i in range(count)]
    known = loaded.vocab.token_to_id
    candidates = [header_and_first_bar(tune) for tune in split_tunes(dataset, 4 * count, options.sampling.seed)]
    prompts = [p for p in candidates if all(c in known for c in p)][:count]
    if not prompts:
        raise UserError(f"the test split of {dataset} has no tune to prompt with; give --prompts FILE")
    return [prompts[i % len(prompts)] for i in range(count)]  # a small test split repeats its prompts


def draw_samples(loaded: LoadedModel, prompts: list[str], n_unconditional: int, config: SamplingConfig,
                 device: str, lead_in: int) -> tuple[list[tuple[str, str, str, int, bool]], int]:
    """(kind, prompt, text, new tokens, truncated) per sample, and the tokens drawn in all (lead-ins included).
    Unconditional samples start at the separator, after a lead-in of `lead_in` tokens when it is not 0 (the
    lead-in is context only, never part of the text)."""
    vocab = loaded.vocab
    token_prompts = [[vocab.separator_id]] * n_unconditional + [
        encode_prompt(p, vocab, f"prompt {i + 1}") for i, p in enumerate(prompts)]
    lead_in_tokens = 0
    if lead_in:
        contexts, lead_in_tokens = lead_ins(loaded.model, len(token_prompts), vocab.separator_id, config, lead_in,
                                            device=device)
        token_prompts = [[*context, *prompt[1:]] for context, prompt in zip(contexts, token_prompts)]
    drawn = sample(loaded.model, token_prompts, vocab.separator_id, config, device=device)
    samples = []
    for i, drawn_sample in enumerate(drawn):
        prompt = "" if i < n_unconditional else prompts[i - n_unconditional]
        kind = "unconditional" if i < n_unconditional else "conditional"
        new_ids = drawn_sample.new_ids
        samples.append((kind, prompt, prompt + vocab.decode(new_ids), len(new_ids), drawn_sample.truncated))
    return samples, lead_in_tokens + sum(drawn_sample.drawn_tokens for drawn_sample in drawn)


def judge(texts: list[str], midi_paths: list[Path | None], timeout_s: float = 10.0) -> list[Verdict]:
    """abc2midi's verdict on each text, keeping each valid one's MIDI at its path; one hung tune stops no other."""
    def verdict_of(i: int) -> Verdict:
        return validate_tune(texts[i], timeout_s=timeout_s, midi_out=midi_paths[i])

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        verdicts = list(pool.map(verdict_of, range(len(texts))))
    for verdict, path in zip(verdicts, midi_paths):
        if path is not None and not verdict.valid:
            path.unlink(missing_ok=True)  # a MIDI of an invalid tune (e.g. no notes) is not a playable sample
    return verdicts


def copy_index_for(dataset: Path, project_dir: Path, log: Callable[[str], None]) -> CopyIndex:
    """The suffix-array index over the training split, built once per dataset and kept under results/copy_index/."""
    manifest = read_manifest(dataset)
    if manifest is None:
        raise UserError(f"no prepared dataset at {dataset} (the run's dataset); run prepare.py again")
    cache = project_dir / "results" / "copy_index" / manifest["fingerprint"][:16]
    try:
        return CopyIndex.load(cache)
    except (OSError, ValueError):
        pass
    started = time.perf_counter()
    texts = pq.read_table(dataset / "train", columns=["abc"])["abc"].to_pylist()
    index = CopyIndex.build(texts)
    # Generate runs of other models can be building the same cache now: their staging folders are left alone.
    with staging_dir(cache) as staging:
        index.save(staging)
        publish_dir(staging, cache)
    log(f"copy index over {len(texts):,} training tunes built in {time.perf_counter() - started:.1f} s ({cache})")
    return index


def measure_reference(dataset: Path, options: GenerateOptions, log: Callable[[str], None]) -> Reference:
    tunes = split_tunes(dataset, options.reference_tunes, seed=0)
    verdicts = validate_tunes(tunes)
    index = copy_index_for(dataset, options.project_dir, log)
    return Reference(valid_fraction(verdicts), len(tunes), summarise([tune_metrics(t) for t in tunes]),
                     copy_summary(index, tunes), index)


def sample_metrics(samples: list[GeneratedSample], reference: Reference) -> dict[str, float]:
    texts = [s.text for s in samples]
    verdicts = [s.verdict for s in samples]
    metrics: dict[str, float] = {
        "valid_fraction": valid_fraction(verdicts), "n_samples": len(samples),
        "n_valid": sum(v.valid for v in verdicts), "n_truncated": sum(s.truncated for s in samples),
        "test_valid_fraction": reference.valid_fraction, "test_tunes_judged": reference.n_tunes,
    }
    for kind in ("unconditional", "conditional"):
        of_kind = [s.verdict for s in samples if s.kind == kind]
        if of_kind:
            metrics[f"valid_fraction_{kind}"] = valid_fraction(of_kind)
    for prefix, music, copying in (("samples", summarise([tune_metrics(t) for t in texts]),
                                    copy_summary(reference.copy_index, texts)),
                                   ("test", reference.music, reference.copying)):
        for name, value in (music | copying).items():
            if isinstance(value, (int, float)) and value is not None:
                metrics[f"{prefix}_{name}"] = float(value)
    return metrics


def write_samples_text(path: Path, info: RunInfo, samples: list[GeneratedSample], metrics: dict[str, float],
                       lead_in: int) -> None:
    start = (f"after the last {lead_in} tokens of a tune the model wrote first (not shown)" if lead_in
             else "cold at the separator")
    lines = [f"# {len(samples)} samples from run {info.run_id} ({info.run_name}: {info.arch} {info.size}, "
             f"final val loss {info.final_val_loss:.4f}, sweep {info.experiment_name})",
             f"# valid (abc2midi-playable): {metrics['n_valid']:.0f}/{len(samples)} = "
             f"{metrics['valid_fraction']:.1%}; real test tunes, same validator: {metrics['test_valid_fraction']:.1%}"
             f" of {metrics['test_tunes_judged']:.0f}",
             f"# each sample starts {start}", ""]
    for s in samples:
        verdict = "valid" if s.verdict.valid else "INVALID: " + "; ".join(s.verdict.reasons)
        lines += [f"=== sample {s.number}: {s.kind}, {len(s.text)} characters ({s.new_tokens} generated"
                  f"{', truncated at the token limit' if s.truncated else ''}); {verdict}"]
        if s.verdict.warnings:
            lines.append(f"abc2midi warnings: {'; '.join(s.verdict.warnings[:5])}"
                         + (f" (+{len(s.verdict.warnings) - 5} more)" if len(s.verdict.warnings) > 5 else ""))
        if s.prompt:
            lines += ["--- prompt:", s.prompt.rstrip("\n")]
        lines += ["--- tune:", s.text.rstrip("\n"), ""]
    path.write_text("\n".join(lines) + "\n")


def generate_for_run(loaded: LoadedModel, options: GenerateOptions, reference: Reference, out_dir: Path,
                     device: str, log: Callable[[str], None]) -> dict[str, float]:
    """Sample, judge, measure and write one run's samples into out_dir (a fresh folder); the metrics."""
    n_unconditional, n_conditional = split_counts(options.num)
    prompts = conditional_prompts(options, loaded, local_dataset(loaded.run.dataset), n_conditional)
    started = time.perf_counter()
    drawn, tokens_drawn = draw_samples(loaded, prompts, n_unconditional, options.sampling, device, options.lead_in)
    sampling_seconds = time.perf_counter() - started
    width = len(str(len(drawn)))
    names = [f"sample_{i:0{width}d}" for i in range(1, len(drawn) + 1)]
    midi_paths = [out_dir / f"{name}.mid" for name in names] if options.render else [None] * len(drawn)
    verdicts = judge([text for _, _, text, _, _ in drawn], midi_paths)
    samples = [GeneratedSample(i + 1, kind, prompt, text, new_tokens, truncated, verdict)
               for i, ((kind, prompt, text, new_tokens, truncated), verdict) in enumerate(zip(drawn, verdicts))]
    metrics = sample_metrics(samples, reference) | {
        "sampling_tokens_per_s": tokens_drawn / max(sampling_seconds, 1e-9)}
    write_samples_text(out_dir / "generated_samples.txt", loaded.run, samples, metrics, options.lead_in)
    (out_dir / "metrics.json").write_text(json.dumps(
        {"run": dataclasses.asdict(loaded.run),
         "sampling": dataclasses.asdict(options.sampling) | {"lead_in": options.lead_in}, "metrics": metrics,
         "invalid_reasons": reason_counts(verdicts)}, indent=1) + "\n")
    if options.render:
        renderer = audio_renderer() if options.audio else None
        pages: dict[int, list[str]] = {}
        audio: dict[int, str] = {}
        for generated, name in zip(samples, names):
            (out_dir / f"{name}.abc").write_text(generated.text)
            if generated.verdict.valid:
                pages[generated.number] = [p.name for p in render_svg(generated.text, out_dir / f"{name}.svg")]
                if renderer and render_wav(renderer, out_dir / f"{name}.mid", out_dir / f"{name}.wav"):
                    audio[generated.number] = f"{name}.wav"
        html_report.write_index(out_dir / "index.html", loaded.run, samples, names, pages, audio, metrics)
    return metrics


def log_to_mlflow(uri: str, info: RunInfo, out_dir: Path, metrics: dict[str, float]) -> None:
    mlflow_store.log_metrics(uri, info.run_id, {samples_key(name): value for name, value in metrics.items()}, step=0)
    mlflow_store.log_artifacts(uri, info.run_id, out_dir, SAMPLES_ARTIFACT)


def write_run_samples(loaded: LoadedModel, options: GenerateOptions, reference: Reference, out_dir: Path,
                      device: str, log: Callable[[str], None]) -> dict[str, float]:
    """generate_for_run into a staging folder that replaces out_dir once complete: an interrupted run never
    leaves half a result."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} exists and is not a folder")
    remove_stale_staging(out_dir)
    with staging_dir(out_dir) as staging:
        metrics = generate_for_run(loaded, options, reference, staging, device, log)
        publish_dir(staging, out_dir)
    return metrics


def sampling_device(non_embedding_params: int) -> str:
    if torch.cuda.is_available():
        return "cuda"
    # One token at a time through a small model is too little work to split: with 2 threads on 2 busy cores,
    # sampling the demo models ran tens of times slower than with one.
    torch.set_num_threads(1 if non_embedding_params < 5_000_000 else max(1, os.cpu_count() or 1))
    return "cpu"


def run_generate(options: GenerateOptions, log: Callable[[str], None] = print) -> dict[str, float]:
    """generate.py --run: one run's samples, written under --out and logged to the run."""
    require("abc2midi", "abcm2ps", "prlimit")
    if options.audio:
        audio_renderer()
    uri = mlflow_store.tracking_uri(options.project_dir)
    info = find_run(uri, options.run, options.sweep)
    log(f"run {info.run_id} ({info.run_name}): {info.arch} {info.size}, {info.params_non_embedding:,} "
        f"non-embedding parameters, final val loss {info.final_val_loss:.4f}, sweep {info.experiment_name}")
    device = sampling_device(info.params_non_embedding)
    loaded = load_model(uri, info, device)
    reference = measure_reference(local_dataset(info.dataset), options, log)
    out_dir = options.out or options.project_dir / "results" / info.experiment_name / "samples" / info.run_name
    metrics = write_run_samples(loaded, options, reference, out_dir, device, log)
    log_to_mlflow(uri, info, out_dir, metrics)
    log(f"{metrics['n_valid']:.0f}/{metrics['n_samples']:.0f} samples valid ({metrics['valid_fraction']:.1%}); "
        f"real test tunes, same validator: {metrics['test_valid_fraction']:.1%} of {reference.n_tunes}; "
        f"{metrics['n_truncated']:.0f} truncated at {options.sampling.max_new_tokens} tokens")
    log(f"samples: {out_dir}/generated_samples.txt; open {out_dir}/index.html to see and hear them")
    plot = options.project_dir / "results" / info.experiment_name / "scaling.png"
    if plot.is_file():
        log(f"scaling-law plot of sweep {info.experiment_name}: {plot}")
    browse = f".venv/bin/mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
    log(f"MLflow (runs, curves, models, samples under {SAMPLES_ARTIFACT}/ of run {info.run_id}): {browse}")
    return metrics


def run_sweep_generate(options: GenerateOptions, log: Callable[[str], None] = print) -> dict[str, dict]:
    """generate.py --sweep: every finished run of the sweep sampled and measured; validity against N plotted."""
    from abcmusic.generate.validity_plot import plot_validity

    require("abc2midi", "abcm2ps", "prlimit")
    assert options.sweep is not None
    uri = mlflow_store.tracking_uri(options.project_dir)
    runs = finished_runs_with_models(uri, options.sweep)
    if not runs:
        raise UserError(f"sweep {options.sweep!r} has no finished run with a model")
    device = sampling_device(max(r.params_non_embedding for r in runs))
    references: dict[str, Reference] = {}
    results: dict[str, dict] = {}
    sweep_dir = options.project_dir / "results" / options.sweep
    for info in sorted(runs, key=lambda r: (r.arch, r.params_non_embedding, r.run_name)):
        if info.dataset not in references:
            references[info.dataset] = measure_reference(local_dataset(info.dataset), options, log)
        loaded = load_model(uri, info, device)
        out_dir = sweep_dir / "samples" / info.run_name
        metrics = write_run_samples(loaded, options, references[info.dataset], out_dir, device, log)
        log_to_mlflow(uri, info, out_dir, metrics)
        results[info.run_name] = {"arch": info.arch, "size": info.size, "n": info.params_non_embedding,
                                  "final_val_loss": info.final_val_loss, "metrics": metrics}
        log(f"{info.run_name}: {metrics['n_valid']:.0f}/{metrics['n_samples']:.0f} valid "
            f"({metrics['valid_fraction']:.1%}), pitch-class entropy {metrics.get('samples_mean_pitch_class_entropy', 0):.2f}"
            f", bars matching the meter {metrics.get('samples_bar_match_share', 0):.1%}")
    reference = next(iter(references.values()))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "validity.json").write_text(json.dumps(
        {"sweep": options.sweep, "samples_per_run": options.num, "test_valid_fraction": reference.valid_fraction,
         "runs": results}, indent=1) + "\n")
    plot_validity(results, reference.valid_fraction, sweep_dir / "validity.png")
    experiment = mlflow_store.client(uri).get_experiment_by_name(options.sweep)
    summary_run = mlflow_store.find_run(uri, experiment.experiment_id, mlflow_store.SUMMARY_KEY, kind="summary")
    if summary_run is not None:
        mlflow_store.client(uri).log_artifact(summary_run.info.run_id, str(sweep_dir / "validity.png"))
        mlflow_store.client(uri).log_artifact(summary_run.info.run_id, str(sweep_dir / "validity.json"))
    log(f"validity against N: {sweep_dir}/validity.png, {sweep_dir}/validity.json")
    return results
