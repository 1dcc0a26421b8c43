"""How fast `radialog label` labels the 3,955 IU X-ray reports (rule-based backend).

Writes the reports (read from torchxrayvision's installed NLMCXR_reports.tgz) to a temporary JSONL
file, then times the labeler in this process (CPU time, cold sentence cache) and the whole
`radialog label` command in a fresh process (wall time: interpreter start, imports, I/O included),
and checks that two command runs give identical output.

    .venv/bin/python benchmarks/labeler_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from radialog.labeler import RuleBasedLabeler, iter_iu_reports
from radialog.labeler.rules import label_sentence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    reports = list(iter_iu_reports())
    texts = [r.text for r in reports]
    labeler = RuleBasedLabeler()
    in_process = []
    for _ in range(args.repeats):
        label_sentence.cache_clear()
        start = time.process_time()
        labeler.label(texts)
        in_process.append(time.process_time() - start)
    best = min(in_process)
    print(
        f"in process: {len(texts)} reports in {best:.2f} s CPU = {len(texts) / best:,.0f} reports/s"
        f" (best of {args.repeats})"
    )

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "iu_reports.jsonl"
        source.write_text("".join(json.dumps({"id": r.id, "report": r.text}) + "\n" for r in reports))
        outputs = []
        for run in range(2):
            output = Path(tmp) / f"labels_{run}.jsonl"
            command = [sys.executable, "-m", "radialog.cli", "label", str(source), "--output", str(output)]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            print(f"`radialog label` run {run + 1}: {len(texts)} reports in {time.perf_counter() - start:.2f} s wall")
            outputs.append(output.read_bytes())
        print("output identical across runs:", outputs[0] == outputs[1])


if __name__ == "__main__":
    main()
