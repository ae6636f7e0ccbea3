"""tools/benchmark.py as a user runs it (tiny network, 1-2 steps), and its
report on known numbers. No timing assertions: only that every figure is
produced and computed from the measurements as documented."""

import json
import math
import os
import subprocess
import sys

import pytest

from mtssl_tf.benchmarks import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run(*args, timeout=900):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "tools.benchmark", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.slow
def test_smoke_run_prints_tables_and_writes_json(tmp_path):
  out = tmp_path / "bench.json"
  result = _run("--sections=trunk,tasks,pipelines,options", "--tasks=col",
                "--precisions=float32", "--options=steps_per_call",
                "--steps_per_call=2", "--depth=14", "--base_width=8",
                "--trunk_size=64", "--steps=2", "--warmup=1", "--rounds=1",
                "--col.head_width=32", f"--output_json={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  for title in ("## Machine", "## Training step per task",
                "## Trunk alone vs TF-Slim", "## Input pipelines",
                "## Speed options", "## Targets"):
    assert title in result.stdout
  results = json.loads(out.read_text())
  assert results["machine"]["matmul_gflops"] > 0
  (task,) = results["tasks"]
  assert task["tasks"] == ["col"] and task["precision"] == "float32"
  assert len(task["step_times"]) == 2 and task["step_seconds"] > 0
  assert task["training_flops"] > 0 and task["peak_rss_mb"] > 100
  floor = task["memory_floor"]
  assert floor["tasks"]["col"]["activations"] > 0
  assert floor["step"] > floor["weights"] + floor["slots"] > 0
  assert 0 < task["rss_import_mb"] <= task["rss_step_mb"]
  assert "## Peak memory against the floor" in result.stdout
  (trunk,) = results["trunk"]
  assert set(trunk["step_seconds"]) == {
      "TF-Slim resnet_v2 (graph, Session)", "mtssl_tf float32"}
  builtin, folder = results["pipelines"]
  assert builtin["tasks"] == folder["tasks"] == ["col"]
  assert (builtin["source"], folder["source"]) == ("builtin", "folder")
  assert builtin["examples_per_second"] > 0
  assert folder["examples_per_second"] > 0
  (options,) = results["options"]
  assert set(options["step_seconds"]) == {"baseline", "steps_per_call"}
  assert results["markdown"].strip() == result.stdout.strip()


@pytest.mark.slow
def test_breakdown_and_levers_sections_run(tmp_path):
  out = tmp_path / "bench.json"
  result = _run("--sections=breakdown,levers", "--breakdown_tasks=rp",
                "--levers_tasks=rp",
                "--levers=before,conv fc units,after",
                "--depth=14", "--base_width=8", "--warmup=1", "--rounds=1",
                "--rp.patch_units=((32,8,2),(16,8,2))",
                "--rp.fc_width=32",
                "--rp.fc_bottleneck=8", f"--output_json={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "## Where each task's step goes" in result.stdout
  assert "## Issue 16's changes, before vs after" in result.stdout
  results = json.loads(out.read_text())
  (breakdown,) = results["breakdown"]
  assert set(breakdown["parts"]) == set(report.BREAKDOWN_PARTS)
  assert breakdown["param_counts"]["head"] > 0
  (levers,) = results["levers"]
  assert set(levers["step_seconds"]) == {"before", "conv fc units", "after"}


@pytest.mark.slow
def test_bad_flags_are_rejected_before_any_work():
  result = _run("--sections=tasks,speed", timeout=120)
  assert result.returncode != 0
  assert "unknown ['speed']" in result.stderr
  result = _run("--levers=before,faster", timeout=120)
  assert result.returncode != 0
  assert "unknown ['faster']" in result.stderr
  result = _run("--tasks=rp+colour", timeout=120)
  assert result.returncode != 0
  assert "['colour']" in result.stderr


def _results():
  gflop = 1e9
  return {
      "machine": {"matmul_gflops": 100.0, "bf16_matmul_gflops": 300.0},
      "tasks": [
          {"tasks": ["rp"], "precision": "float32", "batch_size": 2,
           "step_seconds": 2.0, "examples_per_step": 2,
           "training_flops": 100 * gflop, "peak_rss_mb": 1000.0,
           "matmul_gflops": 90.0},
          {"tasks": ["col"], "precision": "float32", "batch_size": 2,
           "step_seconds": 4.0, "examples_per_step": 2,
           "training_flops": 200 * gflop, "peak_rss_mb": 2000.0,
           "matmul_gflops": 120.0},
          {"tasks": ["rp", "col"], "precision": "float32", "batch_size": 2,
           "step_seconds": 6.6, "examples_per_step": 2,
           "training_flops": 300 * gflop, "peak_rss_mb": 2500.0}],
      "trunk": [{"step_seconds": {"TF-Slim resnet_v2 (graph, Session)": 5.0,
                                  "mtssl_tf float32": 2.5},
                 "examples_per_step": 2, "training_flops": 180 * gflop,
                 "matmul_gflops": 80.0}],
      "pipelines": [{"tasks": ["rp"], "examples_per_second": 2.0,
                     "peak_rss_mb": 500.0}],
  }


def test_report_figures_from_known_measurements():
  results = _results()
  assert report.run_peak(results) == 120.0  # best of all processes
  overhead = report.multitask_overhead(results)
  assert overhead == {"rp+col float32": pytest.approx(6.6 / 6.0)}
  text = report.markdown(results)
  # rp: 100 GFLOP in 2 s = 50 GFLOP/s = 41.7% of 120; 1 example/s.
  assert ("| rp | current | float32 | 2 | 2 | 1 | 100 | 50 | 41.7 | 1000 |"
          in text)
  # Trunk: 72 GFLOP/s, 60% of the peak, 2x TF-Slim.
  assert "| mtssl_tf float32 | 2.5 | 0.8 | 72 | 60 | 2 |" in text
  # Pipeline 2 examples/s feeding a 1 example/s step: headroom 2.
  assert "| rp | builtin | 2 | 1 | 2 | 500 |" in text
  met = {row[0]: row[2] for row in report.targets(results)}
  assert met == {
      "rp step >= 75% of fp32 matmul peak": False,
      "col step >= 75% of fp32 matmul peak": False,
      "rp+col step >= 75% of fp32 matmul peak": False,
      "trunk mtssl_tf float32 >= 1.3x TF-Slim": True,
      "trunk mtssl_tf float32 >= 70% of fp32 matmul peak": False,
      "rp pipeline (builtin) >= 3x its float32 step": False,
      "rp+col float32 <= 1.05x sum of single steps": False}


def test_report_memory_against_the_floor():
  results = _results()
  mib = 2 ** 20
  results["tasks"][0].update(
      rss_import_mb=700.0, rss_step_mb=1500.0,
      memory_floor={"weights": 100 * mib, "slots": 200 * mib,
                    "tasks": {"rp": {"gradients": 100 * mib,
                                     "activations": 100 * mib}},
                    "step": 500 * mib})
  text = report.markdown(results)
  # Floor 700 + 500 = 1200 MB; peak 1500 MB is 1.25x it.
  assert ("| rp | current | float32 | 700 | 100 | 200 | 100 | 100 | 1200 | "
          "1500 | 1.25 |") in text


def test_report_breakdown_and_levers_from_known_measurements():
  gflop = 1e9
  results = _results()
  results["tasks"].append(dict(results["tasks"][0], legacy=True,
                               step_seconds=4.0, peak_rss_mb=1500.0))
  results["breakdown"] = [{
      "task": "rp", "examples_per_step": 2, "peak_rss_mb": 3000.0,
      "rss_start_mb": 400.0, "trunk_flops": 20 * gflop,
      "head_flops": 10 * gflop, "training_flops": 90 * gflop,
      "param_counts": {"trunk": 2 ** 20, "head": 3_000_000},
      "step_seconds": {"trunk_fwd": 0.5, "trunk_fwd_bwd": 1.5, "fwd": 0.75,
                       "fwd_bwd": 2.0, "update": 0.25, "step": 2.5},
      "parts": {"trunk forward": 0.5, "trunk backward": 1.0,
                "head forward + loss": 0.25, "head backward": 0.25,
                "update": 0.25, "other": 0.25}}]
  # A head too small to time: its parts by difference sum to <= 0.
  noisy = dict(results["breakdown"][0], task="rot")
  noisy["parts"] = dict(noisy["parts"], **{"head backward": -0.5})
  results["breakdown"].append(noisy)
  results["levers"] = [{
      "task": "rp", "training_flops": 90 * gflop, "examples_per_step": 2,
      "step_seconds": {"before": 3.0, "after": 2.0}}, {
          "task": "ex", "training_flops": 90 * gflop, "examples_per_step": 2,
          "matmul_gflops": 60.0,
          "step_seconds": {"conv fc units": 4.5, "after": 3.0}}]
  # (2**20 + 3e6) parameters x 28 bytes = 0.113 GB moved by the update.
  results["machine"]["memory_gbps"] = 0.113360128
  text = report.markdown(results)
  # The legacy row is labelled and ignored by the rates and targets.
  assert "| rp | before (legacy) | float32 | 2 | 4 |" in text
  assert report._step_rate(results, "rp", "float32") == 1.0
  # Trunk 3 x 20 GFLOP in 1.5 s = 40 GFLOP/s = 33.3% of 120; head 30 GFLOP
  # in 0.5 s = 60 = 50%; step 90 in 2.5 s = 36 = 30%. Input: 2 examples at
  # 2 examples/s = 1 s. Update at bandwidth: 1 s. Ceiling: 90 GFLOP at
  # 120 = 0.75 s over trunk 1.5 s + head 30 GFLOP at 120 (0.25 s) + update
  # 1 s = 27.3%. Floor: (2**20 + 3e6) x 16 bytes = 61.8 MiB.
  assert ("| rp | 2.5 | 0.500 (20%) | 1.000 (40%) | 0.250 (10%) | "
          "0.250 (10%) | 0.250 (10%) | 0.250 (10%) | 1 | 33.3 | 50 | 30 | "
          "1 | 27.3 | 1.0M + 3.0M | 61.8 | 400 | 3000 |") in text
  assert ("| rot | 2.5 | 0.500 (20%) | 1.000 (40%) | 0.250 (10%) | "
          "-0.500 (-20%) | 0.250 (10%) | 0.250 (10%) | n/a | 33.3 | n/a | 30 "
          "|") in text
  # Levers: 90 GFLOP in 3 s = 30 GFLOP/s = 25% of the run's peak (the row
  # has no own peak); after 1.5x faster. The second row: 20 GFLOP/s = 33.3%
  # of its own process's 60, against its first variant.
  assert "| rp | before | 3 | 30 | 120 | 25 | 1 |" in text
  assert "| rp | after | 2 | 45 | 120 | 37.5 | 1.5 |" in text
  assert "| ex | conv fc units | 4.5 | 20 | 60 | 33.3 | 1 |" in text
  assert "| ex | after | 3 | 30 | 60 | 50 | 1.5 |" in text


def test_report_table_cells():
  assert report.table(["a", "b"], [[1.23456, math.nan], ["x", 1234.5]]) == (
      "| a | b |\n|---|---|\n| 1.23 | n/a |\n| x | 1234 |")


def test_report_prefers_the_alternated_multitask_section():
  results = _results()
  results["multitask"] = [{
      "tasks": ["rp", "col"], "precision": "float32", "overhead": 0.98,
      "step_seconds": {"rp": 1.0, "col": 2.0, "rp+col": 2.94},
      "peak_rss_mb": 3000.0}]
  assert report.multitask_overhead(results) == {"rp+col float32": 0.98}
  text = report.markdown(results)
  assert "| rp+col | float32 | 1 | 2 | 3 | 2.94 | 0.98 | 3000 |" in text
  met = {row[0]: row[2] for row in report.targets(results)}
  assert met["rp+col float32 <= 1.05x sum of single steps"]
