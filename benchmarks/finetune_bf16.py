"""Fine-tuning under mixed_bfloat16 against float32: the time of one training step, on this CPU.

    python benchmarks/finetune_bf16.py [SIZE=224] [STEPS=5]

Each policy runs in its own process (Keras' global dtype policy is process state), alternating twice:
MobileNetV2 (random weights: speed only; every layer but BatchNormalization trainable, where stage 2
unfreezes only the top ones) + a softmax Dense head kept float32, Adam, batches of 32 at SIZE px; two warm-up steps, then the mean of STEPS steps. Records whether
the CPU has AVX512_BF16 / AMX-BF16 (without either, TensorFlow emulates bfloat16 arithmetic). Writes
benchmarks/results/finetune_bf16.json. Accuracy is not measured: a policy that is slower is not kept.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r'''
import sys, time, json, numpy as np, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
policy, size, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keras.mixed_precision.set_global_policy(policy)
base = keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
for l in base.layers:
    if isinstance(l, keras.layers.BatchNormalization): l.trainable = False
x_in = keras.Input((size, size, 3))
out = keras.layers.Dense(5, activation="softmax", dtype="float32")(base(x_in, training=False))
m = keras.Model(x_in, out)
m.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.random((32, size, size, 3), dtype=np.float32); y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 32)]
m.train_on_batch(x, y); m.train_on_batch(x, y)
t = time.perf_counter()
for _ in range(steps): m.train_on_batch(x, y)
print(json.dumps({"policy": policy, "size": size, "step_s": (time.perf_counter() - t) / steps}))
'''
size = int(sys.argv[1]) if len(sys.argv) > 1 else 224
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
res = []
for rep in range(2):
    for pol in ("float32", "mixed_bfloat16"):
        r = subprocess.run([sys.executable, "-c", CHILD, pol, str(size), str(steps)], capture_output=True, text=True)
        res.append(json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"policy": pol, "error": r.stderr[-500:]})
        print(res[-1], flush=True)
flags = open("/proc/cpuinfo").read()
best = {pol: min(r["step_s"] for r in res if r["policy"] == pol and "step_s" in r) for pol in ("float32", "mixed_bfloat16")}
out = {"avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "cpu_count": os.cpu_count(),
       "load_average_end": os.getloadavg(), "size": size, "batch": 32, "best_step_s": best,
       "bf16_over_fp32": best["mixed_bfloat16"] / best["float32"], "runs": res}
print(json.dumps(out))
path = Path(__file__).resolve().parent / "results" / "finetune_bf16.json"
path.write_text(json.dumps(out, indent=2))
print(f"wrote {path}")
