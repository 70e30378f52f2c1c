"""Regenerate the vendored subsets (run from the repo root with ../shared/data present)."""
import csv, json, random
from pathlib import Path
import sys
src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
out = Path("tests/data")
rng = random.Random(0)
def rows(p):
    return list(csv.DictReader(open(p, encoding="utf-8")))
tr, te = rows(src/"banking77/train.csv"), rows(src/"banking77/test.csv")
classes = sorted({r["category"] for r in tr})
pick = sorted(rng.sample(classes, 20))
def sub(rs, n):
    o = []
    for c in pick:
        cs = [r for r in rs if r["category"] == c]
        o += rng.sample(cs, n)
    return o
for name, rs, n in (("banking77_small_train.csv", tr, 15), ("banking77_small_test.csv", te, 5)):
    with open(out/name, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f); w.writerow(["id", "text", "label"])
        for i, r in enumerate(sub(rs, n)):
            w.writerow([f"{name.split('_')[2][:2]}{i:04d}", r["text"], r["category"]])
d = json.load(open(src/"clinc150/data_full.json"))
intents = sorted({l for _, l in d["train"]})
cpick = sorted(rng.sample(intents, 15))
def csub(split, n, oos_split, n_oos):
    o = []
    for c in cpick:
        o += [(t, c) for t in rng.sample([t for t, l in d[split] if l == c], n)]
    o += [(t, "oos") for t, _ in rng.sample(d[oos_split], n_oos)]
    return o
for name, split, n, oos, no in (("clinc150_small_train.csv", "train", 10, "oos_train", 0), ("clinc150_small_val.csv", "val", 5, "oos_val", 15), ("clinc150_small_test.csv", "test", 5, "oos_test", 15)):
    with open(out/name, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f); w.writerow(["id", "text", "label"])
        for i, (t, l) in enumerate(csub(split, n, oos, no)):
            w.writerow([f"{split[:2]}{i:04d}", t, l])
