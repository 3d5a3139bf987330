#!/usr/bin/env bash
# Run on the GPU machine, in the repository root, with build/gpu-carry from
# test/gpu/prepare.sh: unpacks it into build/, then runs the named steps
# (default: all), each printing its table; full outputs go to $OUT (or
# build/gpu-out).
#   check  test/gpu/check.py (transformers against llmrun, backend_test)
#   bench  llmrun bench on the 8B shape, contexts 512 and 4096
#   serve  llmrun serve + tools/bench_openai.py, 1,024 x 1000/1000 over HTTP
#   ab     the builds packed in build/gpu-ab by test/gpu/pack-ab.sh (carry
#          that instead of build/gpu-carry): llmrun bench on each in turn
#          (prefill rows and decode steps),
#          $AB_ROUNDS rounds (default 2), batch sizes $AB_BATCHES (default
#          1 8 64), contexts 512 and 4096
#   profile  Nsight Compute on the GEMV and cuBLAS (test/gpu/gemv_profile.cu)
#   trace  the builds in build/gpu-ab (as ab) under test/gpu/kernel_trace.cpp:
#          the decode graph's kernel timeline at batch $TRACE_BATCH (default
#          1), context 512, with each GEMM choice in $TRACE_GEMMS (default
#          "tuned gemv"; see `llmrun bench --gemm`), read by
#          test/gpu/trace_step.py
#   kernel  Nsight Compute on one kernel inside llmrun bench, for each build
#          in build/gpu-ab (as ab): the last two launches of the kernels
#          named by the regex $NCU_KERNEL (default paged_attention) in
#          `llmrun bench --batch-sizes $NCU_BATCH (default 64) --contexts
#          512`; decode kernels run last there (the decode tables), the
#          GEMV's last launches are its alone-GEMM table
#   kvread  test/gpu/kv_read_probe.cu: the read bandwidth of decode
#          attention's access pattern (8 KB pages, a walk a warp) against
#          sequential reads
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
out=${OUT:-build/gpu-out}
mkdir -p "$out" build/bin build/test
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if [ -d build/gpu-carry ]; then
  xz -dc build/gpu-carry/llmrun.xz > build/bin/llmrun && chmod +x build/bin/llmrun || exit 1
  cp build/gpu-carry/backend_test build/test/ && tar -C build -xJf build/gpu-carry/engines.tar.xz || exit 1
fi
unpack_ab() {
  for d in build/gpu-ab/*/; do
    [ -x "$d/llmrun" ] && continue
    xz -dc "$d/llmrun.xz" > "$d/llmrun" && chmod +x "$d/llmrun" && tar -C "$d" -xJf "$d/engine.tar.xz" || exit 1
  done
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
status=0
for step in "${@:-check bench serve}"; do
  for s in $step; do
    case $s in
      check)
        python3 test/gpu/check.py build/bin/llmrun build/gpu-engines build/gpu-check-work > "$out/check.txt" 2>&1 || status=1
        grep -E '^\| |passed, ' "$out/check.txt" | grep -v '| pass |' ;;
      bench)
        build/bin/llmrun bench build/gpu-engines/llama-3.1-8b-8192 --random-weights --contexts 512 4096 \
          --repeats 5 > "$out/bench.txt" 2>&1 || status=1
        grep -E '^(device limits|cold start)' "$out/bench.txt"
        grep -A3 '^| prefill |' "$out/bench.txt"; grep -A14 '^| decode batch' "$out/bench.txt"
        grep -A14 '^| decode step (graph) without' "$out/bench.txt" ;;
      serve)
        build/bin/llmrun serve build/gpu-engines/llama-3.1-8b-4096 --random-weights --max-connections 2048 \
          --max-queued-requests 2048 > "$out/serve.log" 2>&1 &
        server=$!
        for _ in $(seq 180); do curl -sf http://127.0.0.1:8000/health > /dev/null && break; sleep 1; done
        python3 tools/bench_openai.py http://127.0.0.1:8000 --num-requests 1024 --input-len 1000 \
          --output-len 1000 > "$out/serve.txt" 2>&1 || status=1
        kill "$server"; wait "$server"
        tail -12 "$out/serve.txt" ;;
      ab)
        unpack_ab
        for round in $(seq "${AB_ROUNDS:-2}"); do
          for d in build/gpu-ab/*/; do
            name=$(basename "$d")
            "$d/llmrun" bench "$d/engine" --random-weights --batch-sizes ${AB_BATCHES:-1 8 64} --contexts 512 4096 \
              --repeats 5 > "$out/ab-$name-$round.txt" 2>&1 || status=1
            echo "== $name ($(cat "$d/commit.txt")), round $round"
            grep -E '^\| ([0-9]+ \| (512|4096) \||[0-9]+x[0-9]+ \|)' "$out/ab-$name-$round.txt"
          done
        done ;;
      profile)
        work=build/gpu-profile && mkdir -p "$work"
        cat kernels/common.cuh runtime/backend/cuda/GemvShape.h runtime/backend/cuda/gemv.cu \
          | grep -v '^#pragma once' > "$work/gemv_source.cuh"
        /usr/local/cuda/bin/nvcc -O2 --expt-relaxed-constexpr -arch=sm_90a -I"$work" test/gpu/gemv_profile.cu -lcublas -o "$work/gemv_profile" \
          || exit 1
        # Every kernel but gemv_profile.cu's `fill`: its GEMVs and cuBLAS's kernels.
        /usr/local/cuda/bin/ncu --kernel-name regex:'^[^f]' --launch-count 16 --section SpeedOfLight \
          --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy \
          "$work/gemv_profile" > "$out/profile.txt" 2>&1 || status=1
        grep -E '^  [a-zA-Z_].*\(|Duration|DRAM Throughput|L2 Cache Throughput|Eligible Warps' "$out/profile.txt" \
          | cut -c1-100 ;;
      trace)
        unpack_ab
        work=build/gpu-trace && mkdir -p "$work"
        sites=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))')
        include=$(dirname "$(find /usr/local/cuda/ $sites -name cupti.h 2>/dev/null | head -1)")
        library=$(find "$include/.." /usr/local/cuda/ -name 'libcupti.so*' 2>/dev/null | head -1)
        record=$(grep -rhoE 'CUpti_ActivityKernel[0-9]+' "$include" | sort -V | tail -1)
        echo "CUPTI: $include, $library, $record"
        g++ -O2 -std=c++17 -shared -fPIC -DKERNEL_RECORD="$record" -I"$include" -I/usr/local/cuda/include \
          test/gpu/kernel_trace.cpp "$library" -Wl,-rpath,"$(dirname "$library")" -o "$work/kernel_trace.so" || exit 1
        for d in build/gpu-ab/*/; do
          for gemm in ${TRACE_GEMMS:-tuned gemv}; do
            name=$(basename "$d")-$gemm-b${TRACE_BATCH:-1}
            CUDA_INJECTION64_PATH=$PWD/$work/kernel_trace.so KERNEL_TRACE_FILE=$work/$name.tsv "$d/llmrun" bench \
              "$d/engine" --random-weights --batch-sizes "${TRACE_BATCH:-1}" --contexts 512 --repeats 10 --gemm "$gemm" \
              > "$out/trace-$name.txt" 2>&1 || status=1
            echo "== $name ($(cat "$d/commit.txt")): traced bench"
            grep -E "^\\| ${TRACE_BATCH:-1} \\| 512 \\|" "$out/trace-$name.txt"
            python3 test/gpu/trace_step.py "$work/$name.tsv" "$name" | tee -a "$out/trace-$name.txt"
            # Only the graphs' kernels come back (the files' size is limited).
            awk -F'\t' 'NR == 1 || $4 != 0' "$work/$name.tsv" | xz -T0 > "$out/trace-$name.tsv.xz"
          done
        done ;;
      kernel)
        unpack_ab
        ncu=/usr/local/cuda/bin/ncu
        for d in build/gpu-ab/*/; do
          name=$(basename "$d")-b${NCU_BATCH:-64}
          # A small KV cache keeps the replays short; it still holds the batch.
          kv_tokens=$(( ${NCU_BATCH:-64} * 600 > 40000 ? ${NCU_BATCH:-64} * 600 : 40000 ))
          bench=("$d/llmrun" bench "$d/engine" --random-weights --batch-sizes "${NCU_BATCH:-64}" --contexts 512
                 --repeats 3 --kv-cache-tokens "$kv_tokens")
          filter=(--kernel-name "regex:${NCU_KERNEL:-paged_attention}")
          # One cheap pass counts the launches, the second profiles the last two.
          launches=$("$ncu" "${filter[@]}" --metrics launch__grid_size --csv "${bench[@]}" 2>/dev/null \
                     | grep -c '"launch__grid_size"')
          [ "$launches" -ge 2 ] || { echo "no launch of ${NCU_KERNEL:-paged_attention}" >&2; status=1; continue; }
          "$ncu" "${filter[@]}" --launch-skip $((launches - 2)) --launch-count 2 --section SpeedOfLight \
            --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats \
            --section SchedulerStats --section Occupancy --section LaunchStats --section SourceCounters \
            --metrics smsp__inst_executed.sum "${bench[@]}" > "$out/kernel-$name.txt" 2>&1 || status=1
          echo "== $name ($(cat "$d/commit.txt")): launches $((launches - 1)) and $launches of $launches"
          grep -E '^    (Grid Size|Cluster Size|Registers Per|Duration|DRAM Throughput|Issue Slots Busy|Eligible Warps|Warp Cycles Per Issued|Achieved Occupancy|smsp__inst)' \
            "$out/kernel-$name.txt" | tr -s ' '
        done ;;
      kvread)
        /usr/local/cuda/bin/nvcc -O2 -std=c++17 -arch=sm_90a test/gpu/kv_read_probe.cu -o build/kv_read_probe \
          || exit 1
        build/kv_read_probe | tee "$out/kvread.txt" ;;
      *) echo "unknown step $s (check, bench, serve, ab, profile, trace, kernel, kvread)" >&2; exit 2 ;;
    esac
  done
done
exit $status
