"""The README agrees with the code, the CI script and the measured results."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}


def _commands(text: str) -> list[str]:
    """Shell lines of the first ```bash block, comments stripped."""
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_opens_with_install_run_and_the_ci_test_command():
    install_run, test, quick = _commands(README)
    assert install_run.startswith("pip install torch==") and install_run.endswith("python trainer/run.py")
    assert quick == f'{test} -m "not slow"'  # the work-in-progress subset: the same suite less its slow tests
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == test  # CI runs exactly the README's test command


def test_readme_numbers_come_from_the_results_file():
    import sys

    sys.path.insert(0, str(ROOT))
    from benchmarks.default_run import OUT, SWEEP, readme_table

    result = json.loads(OUT.read_text())
    assert result["date"] and result["machine"]["cpu"] and "conv_bilstm" in result["runs"]
    sweep = json.loads(SWEEP.read_text()) if SWEEP.is_file() else None
    assert readme_table(result, sweep) in README  # regenerate: python benchmarks/default_run.py --markdown


def test_no_undefined_jargon_and_named_presets():
    for word in ("seed V3", "seed V4", "seed claim", "seed size", "V3 ", "V4 "):
        assert word not in README, word
    assert "the T4 Transformer preset" in README and "the A10G Conv-BiLSTM preset" in README
    assert len(README.splitlines()) < 200


def test_bf16_on_the_cpu_is_described_as_the_code_does_it():
    text = README + "".join(DOCS.values())
    assert "native bf16" in DOCS["options.md"]
    assert "bf16 on the CPU is kept for the Transformer but replaced by fp32 for the LSTM" not in text


def test_relative_links_point_to_files_that_exist():
    for name, text in [("README.md", README), *((f"docs/{k}", v) for k, v in DOCS.items())]:
        base = (ROOT / name).parent
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (base / target).exists(), f"{name}: broken link {target}"
