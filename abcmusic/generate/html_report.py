"""index.html: every sample's score, text and verdict side by side, with a player where audio exists; no server."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from abcmusic.generate.pipeline import GeneratedSample
    from abcmusic.generate.run_model import RunInfo

STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
.sample { display: flex; gap: 1.5em; border-top: 1px solid #ccc; padding: 1em 0; }
.text { flex: 1; min-width: 24em; }
.score { flex: 1.3; }
.score img { max-width: 100%; border: 1px solid #eee; }
pre { white-space: pre-wrap; word-break: break-all; font-size: 0.85em; background: #f7f7f7; padding: 0.5em; }
.valid { color: #176b21; } .invalid { color: #a11; }
"""


def write_index(path: Path, info: "RunInfo", samples: list["GeneratedSample"], names: list[str],
                pages: dict[int, list[str]], audio: dict[int, str], metrics: dict[str, float]) -> None:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(info.run_name)} samples</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{len(samples)} samples from {e(info.run_name)}</h1>",
             f"<p>{e(info.arch)} {e(info.size)}, {info.params_non_embedding:,} non-embedding parameters, final "
             f"validation loss {info.final_val_loss:.4f} (sweep {e(info.experiment_name)}, run {e(info.run_id)}).</p>",
             f"<p><b>{metrics['n_valid']:.0f} of {len(samples)} valid ({metrics['valid_fraction']:.1%})</b>: abc2midi "
             f"converts them without errors into MIDI with notes. Real test tunes judged the same way: "
             f"{metrics['test_valid_fraction']:.1%} of {metrics['test_tunes_judged']:.0f}.</p>"]
    for sample, name in zip(samples, names):
        verdict = sample.verdict
        status = ("<span class='valid'>valid</span>" if verdict.valid else
                  "<span class='invalid'>invalid: " + e("; ".join(verdict.reasons[:5])) + "</span>")
        truncated = ", truncated at the token limit" if sample.truncated else ""
        score = "".join(f"<img src='{e(page)}' alt='score of {e(name)}'>" for page in pages.get(sample.number, []))
        player = (f"<p><audio controls preload='none' src='{e(audio[sample.number])}'></audio></p>"
                  if sample.number in audio else "")
        links = f"<a href='{e(name)}.abc'>ABC</a>" + (f" · <a href='{e(name)}.mid'>MIDI</a>" if verdict.valid else "")
        prompt = f"<p>prompt:</p><pre>{e(sample.prompt)}</pre>" if sample.prompt else ""
        parts.append(
            f"<div class='sample' id='{e(name)}'><div class='text'><h2>{sample.number}. {e(sample.kind)}</h2>"
            f"<p>{status}<br>{len(sample.text)} characters, {sample.new_tokens} generated{truncated} · {links}</p>"
            f"{player}{prompt}<pre>{e(sample.text)}</pre></div>"
            f"<div class='score'>{score or '<p>(no score: the tune is not valid)</p>'}</div></div>")
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts))
