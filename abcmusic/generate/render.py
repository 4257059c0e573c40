"""Renderings of a sample for people: an SVG score (abcm2ps) and a WAV (a General MIDI synthesizer)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from abcmusic.errors import UserError

SOUNDFONTS = ("/usr/share/sounds/sf2/default-GM.sf2", "/usr/share/sounds/sf2/FluidR3_GM.sf2")
# Debian's timidity.cfg only sources the config of fluid-soundfont-gm, a package timidity merely recommends; the
# freepats package brings a complete config of its own.
TIMIDITY_CONFIGS = (Path("/etc/timidity/timidity.cfg"), Path("/etc/timidity/freepats.cfg"))
RENDER_TIMEOUT_S = 20.0
AUDIO_SAMPLE_RATE = 22050


def render_svg(abc_text: str, out_path: Path, timeout_s: float = RENDER_TIMEOUT_S) -> list[Path]:
    """The score as SVG pages out_path, out_path-p2.svg, ...; [] when abcm2ps fails, hangs or writes nothing."""
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        (work / "tune.abc").write_text(abc_text, errors="replace")
        try:
            subprocess.run(["abcm2ps", "-q", "-g", "tune.abc", "-O", "page.svg"], cwd=work, capture_output=True,
                           timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return []
        pages = sorted(work.glob("page*.svg"))
        written = []
        for number, page in enumerate(pages, start=1):
            target = out_path if number == 1 else out_path.with_name(f"{out_path.stem}-p{number}.svg")
            shutil.move(page, target)
            written.append(target)
        return written


def audio_renderer(timidity_configs: tuple[Path, ...] = TIMIDITY_CONFIGS) -> list[str]:
    """The command prefix that renders MIDI to WAV (fluidsynth with a GM soundfont, else timidity), or a UserError."""
    soundfont = next((s for s in SOUNDFONTS if Path(s).is_file()), None)
    if shutil.which("fluidsynth") and soundfont:
        return ["fluidsynth", "-ni", "-q", "-r", str(AUDIO_SAMPLE_RATE), soundfont]
    if shutil.which("timidity"):
        problems = {config: missing_timidity_source(config) for config in timidity_configs}
        usable = next((config for config, problem in problems.items() if problem is None), None)
        if usable is None:
            default = timidity_configs[0]
            raise UserError(f"--audio: timidity cannot read its configuration ({default}: {problems[default]}); "
                            "install its patches with: apt-get install --no-install-recommends freepats")
        return ["timidity", "-c", str(usable), "-Ow", "-s", str(AUDIO_SAMPLE_RATE)]
    raise UserError("--audio needs a General MIDI synthesizer; install one with: "
                    "apt-get install --no-install-recommends timidity freepats "
                    "(or fluidsynth fluid-soundfont-gm)")


def missing_timidity_source(config: Path) -> str | None:
    """Why timidity cannot load `config` (the file, or a file it sources, is missing), or None when it can."""
    if not config.is_file():
        return f"{config} is missing"
    for line in config.read_text(errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "source":
            sourced = Path(words[1]) if Path(words[1]).is_absolute() else config.parent / words[1]
            if not sourced.is_file():
                return f"it sources {sourced}, which is missing"
            if (problem := missing_timidity_source(sourced)) is not None:
                return problem
    return None


def render_wav(renderer: list[str], midi_path: Path, wav_path: Path, timeout_s: float = RENDER_TIMEOUT_S) -> bool:
    """Render the MIDI to WAV; False when the synthesizer fails, hangs or writes nothing."""
    if renderer[0] == "fluidsynth":
        command = [*renderer[:-1], "-F", str(wav_path), renderer[-1], str(midi_path)]
    else:
        command = [*renderer, "-o", str(wav_path), str(midi_path)]
    try:
        subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        wav_path.unlink(missing_ok=True)
        return False
    return wav_path.is_file() and wav_path.stat().st_size > 44  # more than a WAV header
