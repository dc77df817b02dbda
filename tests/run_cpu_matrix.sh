#!/usr/bin/env bash
# Run the tests under every CPU kernel set and thread count that users' machines may pick.
#
# PyTorch chooses its vectorised CPU kernels by ATEN_CPU_CAPABILITY (default = scalar, avx2,
# avx512); float results may differ in the last bits between them and between thread counts,
# and every test must hold under all of them. Usage, from the repository root:
#
#   tests/run_cpu_matrix.sh                        # the whole suite: python -m pytest -q tests
#   tests/run_cpu_matrix.sh -n 2 tests/d2/modeling # any pytest arguments
#   CAPABILITIES="default avx512" THREADS=1 tests/run_cpu_matrix.sh tests/d2
#
# A capability the CPU lacks falls back to the best one it has (the line shows the one used).
# Prints one summary line per combination; exits non-zero if any combination failed.
set -u
capabilities=${CAPABILITIES:-"default avx2 avx512"}
threads=${THREADS:-"1 2"}
[ $# -eq 0 ] && set -- tests
status=0
for cap in $capabilities; do
    for n in $threads; do
        used=$(ATEN_CPU_CAPABILITY=$cap python -c "import torch; print(torch.backends.cpu.get_cpu_capability())")
        summary=$(ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=$n python -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -n 1)
        rc=${PIPESTATUS[0]}
        echo "ATEN_CPU_CAPABILITY=$cap ($used) OMP_NUM_THREADS=$n: $summary"
        [ "$rc" -ne 0 ] && status=1
    done
done
exit $status
