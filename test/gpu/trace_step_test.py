#!/usr/bin/env python3
"""trace_step.py on a made-up trace (CI has no GPU to make a real one)."""
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trace_step  # noqa: E402

HEADER = "start\tend\tcorrelation\tgraph\tnode\tstream\tgrid_x\tgrid_y\tblock_x\tname\n"


def line(start, end, correlation, graph, name):
    return f"{start}\t{end}\t{correlation}\t{graph}\t0\t7\t132\t1\t512\t{name}\n"


# One step, offsets in ns: a GEMV, a norm that overlaps its tail, a second
# GEMV that starts early and ends last.
STEP = [(0, 10_000, "gemv_rows"), (8_000, 12_000, "add_rms_norm"), (9_000, 30_000, "gemv_rows")]


def trace_text():
    text = HEADER + line(1, 2, 1, 0, "not_in_a_graph")
    text += line(500, 600, 2, 3, "capture_warmup")  # a smaller graph
    for launch, origin in enumerate((1_000_000, 2_000_000, 3_000_000)):
        for start, end, name in STEP:
            text += line(origin + start, origin + end, 10 + launch, 5, name)
    return text


class TraceStepTest(unittest.TestCase):
    def setUp(self):
        self.file = tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False)
        self.file.write(trace_text())
        self.file.close()

    def tearDown(self):
        os.unlink(self.file.name)

    def test_takes_the_largest_graph_without_its_first_launch(self):
        steps = trace_step.read_steps(self.file.name)
        self.assertEqual([k[0][0] for k in steps], [2_000_000, 3_000_000])
        self.assertEqual([k[2] for k in steps[0]], ["gemv_rows", "add_rms_norm", "gemv_rows"])

    def test_lengthening_adds_up_to_the_span(self):
        kinds = trace_step.kinds_of_step(trace_step.read_steps(self.file.name)[0])
        self.assertEqual(kinds["gemv_rows <- start"], [1, 10_000, 10_000])
        self.assertEqual(kinds["add_rms_norm <- gemv_rows"], [1, 4_000, 2_000])
        self.assertEqual(kinds["gemv_rows <- add_rms_norm"], [1, 21_000, 18_000])
        self.assertEqual(sum(k[2] for k in kinds.values()), 30_000)

    def test_prints_the_table(self):
        out = subprocess.run([sys.executable, trace_step.__file__, self.file.name, "made-up"], check=True,
                             capture_output=True, text=True).stdout
        self.assertIn("made-up: 2 steps of 3 kernels", out)
        self.assertIn("step 0.030 ms", out)
        self.assertIn("| gemv_rows <- add_rms_norm | 1 | 21.0 | 0.018 |", out)

    def test_a_trace_without_graphs_is_an_error(self):
        with open(self.file.name, "w") as f:
            f.write(HEADER + line(1, 2, 1, 0, "eager"))
        with self.assertRaises(SystemExit):
            trace_step.read_steps(self.file.name)


if __name__ == "__main__":
    unittest.main()
