"""The parts of generate.py below the CLI: prompts, renderings (real abcm2ps and synthesizer), index.html, judging."""

from __future__ import annotations

import shutil

import pytest

from abcmusic.notation.validity import validate_tune
from abcmusic.data.vocab import Vocabulary
from abcmusic.errors import UserError
from abcmusic.generate import html_report
from abcmusic.generate.pipeline import GeneratedSample, judge, split_counts
from abcmusic.generate.prompts import encode_prompt, header_and_first_bar, read_prompts_file
from abcmusic.generate.render import audio_renderer, missing_timidity_source, render_svg, render_wav
from abcmusic.generate.run_model import RunInfo
from abcmusic.tracking.model_registry import RunModel

TUNE = "X:1\nT:Scale\nM:4/4\nL:1/8\nK:G\nGABc defg|gfed cBAG|\nG8|]\n"


def test_header_and_first_bar_stops_after_the_first_bar_line():
    assert header_and_first_bar(TUNE) == "X:1\nT:Scale\nM:4/4\nL:1/8\nK:G\nGABc defg|"


def test_header_and_first_bar_keeps_voice_and_midi_lines_after_k():
    tune = "X:1\nM:3/4\nL:1/8\nK:C\nV:1\n%%MIDI program 1\nC2 D2 E2|F6|]\n"
    assert header_and_first_bar(tune) == "X:1\nM:3/4\nL:1/8\nK:C\nV:1\n%%MIDI program 1\nC2 D2 E2|"


def test_a_tune_without_k_is_its_own_prompt():
    assert header_and_first_bar("abc|def") == "abc|def"


def test_prompts_file_splits_on_blank_lines(tmp_path):
    path = tmp_path / "p.abc"
    path.write_text("X:1\r\nK:C\r\nCD|\r\n\r\n  \nX:2\nK:D\nDE|")
    assert read_prompts_file(path) == ["X:1\nK:C\nCD|\n", "X:2\nK:D\nDE|\n"]
    (tmp_path / "empty.abc").write_text("\n\n")
    with pytest.raises(UserError, match="holds no prompt"):
        read_prompts_file(tmp_path / "empty.abc")


def test_encode_prompt_starts_at_the_separator_and_refuses_unknown_characters():
    vocab = Vocabulary.from_characters("X:1\nKC|")
    assert encode_prompt("X:1\n", vocab, "p") == [vocab.separator_id, *vocab.encode("X:1\n")]
    with pytest.raises(UserError, match=r"p has character\(s\) outside the model's vocabulary: 'Z'"):
        encode_prompt("X:1\nZ", vocab, "p")


@pytest.mark.parametrize("num, expected", [(12, (6, 6)), (1, (1, 0)), (5, (3, 2)), (100, (50, 50))])
def test_half_the_samples_are_unconditional_rounded_up(num, expected):
    assert split_counts(num) == expected


def test_render_svg_writes_a_score_and_nothing_for_garbage(tmp_path):
    pages = render_svg(TUNE, tmp_path / "s.svg")
    assert pages == [tmp_path / "s.svg"] and "<svg" in (tmp_path / "s.svg").read_text()[:2000]
    assert render_svg("", tmp_path / "empty.svg") == []


def test_render_wav_from_the_judged_midi(tmp_path):
    if not (shutil.which("timidity") or shutil.which("fluidsynth")):
        pytest.skip("no synthesizer installed (install.sh installs timidity as root)")
    midi = tmp_path / "t.mid"
    assert validate_tune(TUNE, midi_out=midi).valid
    assert render_wav(audio_renderer(), midi, tmp_path / "t.wav")
    assert (tmp_path / "t.wav").read_bytes()[:4] == b"RIFF"


def test_a_timidity_config_that_sources_a_missing_file_is_named(tmp_path):
    patches = tmp_path / "patches.cfg"
    patches.write_text("dir /usr/share/midi/freepats\nbank 0\n")
    (tmp_path / "complete.cfg").write_text(f"# comment\nsource {patches}\n")
    (tmp_path / "nested.cfg").write_text("source complete.cfg\n")
    (tmp_path / "broken.cfg").write_text(f"source {tmp_path / 'fluidr3_gm.cfg'}\n")
    (tmp_path / "nested_broken.cfg").write_text("source broken.cfg\n")
    assert missing_timidity_source(tmp_path / "complete.cfg") is None
    assert missing_timidity_source(tmp_path / "nested.cfg") is None
    missing = tmp_path / "fluidr3_gm.cfg"
    assert missing_timidity_source(tmp_path / "broken.cfg") == f"it sources {missing}, which is missing"
    assert missing_timidity_source(tmp_path / "nested_broken.cfg") == missing_timidity_source(tmp_path / "broken.cfg")
    assert missing_timidity_source(tmp_path / "absent.cfg") == f"{tmp_path / 'absent.cfg'} is missing"


def test_timidity_without_a_usable_config_is_refused_in_one_line(tmp_path):
    if not shutil.which("timidity") or shutil.which("fluidsynth"):
        pytest.skip("needs timidity as the synthesizer (fluidsynth is tried first)")
    (tmp_path / "timidity.cfg").write_text(f"source {tmp_path / 'fluidr3_gm.cfg'}\n")
    with pytest.raises(UserError) as refused:
        audio_renderer((tmp_path / "timidity.cfg", tmp_path / "freepats.cfg"))
    message = str(refused.value)
    assert "\n" not in message and "fluidr3_gm.cfg, which is missing" in message and "apt-get install" in message
    (tmp_path / "freepats.cfg").write_text("dir /usr/share/midi/freepats\n")
    assert audio_renderer((tmp_path / "timidity.cfg", tmp_path / "freepats.cfg"))[:3] == [
        "timidity", "-c", str(tmp_path / "freepats.cfg")]


def test_judge_keeps_midi_of_valid_tunes_only(tmp_path):
    texts = [TUNE, "X:1\nK:C\nz4|z4|]\n", "no tune here"]
    paths = [tmp_path / f"{i}.mid" for i in range(3)]
    verdicts = judge(texts, paths)
    assert [v.valid for v in verdicts] == [True, False, False]
    assert [p.exists() for p in paths] == [True, False, False]
    assert verdicts[1].reasons[0].startswith("no_notes")


def test_index_html_shows_score_text_verdict_and_player(tmp_path):
    valid = validate_tune(TUNE)
    invalid = validate_tune("X:1\nK:C\n<b>|\n")
    info = RunInfo("abc123", "gpt-x", "sweep", "gpt", "x", 1000, 1.234, "/data", RunModel("abc123", "m-1"))
    samples = [GeneratedSample(1, "unconditional", "", TUNE, 50, False, valid),
               GeneratedSample(2, "conditional", "X:1\nK:C\n", "X:1\nK:C\n<b>|\n", 4, True, invalid)]
    metrics = {"n_valid": 1, "valid_fraction": 0.5, "test_valid_fraction": 0.9, "test_tunes_judged": 10}
    html_report.write_index(tmp_path / "index.html", info, samples, ["s1", "s2"], {1: ["s1.svg"]}, {1: "s1.wav"},
                            metrics)
    page = (tmp_path / "index.html").read_text()
    assert "<img src='s1.svg'" in page and "<audio controls" in page and "src='s1.wav'" in page
    assert "&lt;b&gt;|" in page and "<b>|" not in page  # sample text is escaped
    assert "invalid: " in page and "truncated at the token limit" in page
    assert "1 of 2 valid (50.0%)" in page
