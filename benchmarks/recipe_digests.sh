#!/usr/bin/env bash
# benchmarks/recipe_digests.sh PTG OUT: the README recipe ("Your own photos") on 9 sample pairs, 20 steps,
# one thread; prints the digests a reshaping of the code must not change (manifest, run digests, eval
# means, report.md, restored PNGs). Compare two checkouts: run it with each one's ptg and diff the outputs.
set -euo pipefail
ptg=$1; out=$2
rm -rf $out; mkdir -p $out; cd $out
$ptg data samples --out pairs --max-side 128 --no-opencv >/dev/null
python3 - <<'PY'
import json, pathlib, shutil
rows = [json.loads(l) for l in open("pairs/manifest.jsonl")]
for d in ("my_pairs/input", "my_pairs/target", "new_photos"): pathlib.Path(d).mkdir(parents=True, exist_ok=True)
for r in rows[:9]:
    shutil.copy(pathlib.Path("pairs") / r["input"], f"my_pairs/input/{r['id']}.png")
    shutil.copy(pathlib.Path("pairs") / r["target"], f"my_pairs/target/{r['id']}.png")
for r in rows[:2]:
    shutil.copy(pathlib.Path("pairs") / r["input"], f"new_photos/{r['id']}.png")
PY
q="--set run.threads=1"
$ptg manifest build --root my_pairs --out my_pairs/manifest.jsonl >/dev/null
$ptg extract-priors --model imagenet --manifest my_pairs/manifest.jsonl --out priors/imagenet >/dev/null
$ptg train --manifest my_pairs/manifest.jsonl --priors priors/imagenet --crop 64 --steps 20 --out runs/mine $q -q >/dev/null 2>&1
$ptg train --manifest my_pairs/manifest.jsonl --mode baseline --crop 64 --steps 20 --out runs/mine-f $q -q >/dev/null 2>&1
$ptg eval --run runs/mine --out eval/mine >/dev/null 2>&1
$ptg eval --run runs/mine-f --out eval/mine-f >/dev/null 2>&1
$ptg report eval/mine-f eval/mine --out report >/dev/null 2>&1
$ptg restore --ckpt runs/mine --input new_photos/ --output restored/ >/dev/null 2>&1
echo "manifest $(sha256sum my_pairs/manifest.jsonl | cut -c1-16)"
for r in mine mine-f; do echo "run $r digest $(python3 -c "import json;print(json.load(open('runs/$r/final.json'))['digest'][:16])")"; done
for r in mine mine-f; do echo "eval $r $(python3 -c "import json;m=json.load(open('eval/$r/metrics.json'))['mean'];print(json.dumps(m,sort_keys=True))" | sha256sum | cut -c1-16)"; done
echo "report.md $(sha256sum report/report.md | cut -c1-16)"
for f in restored/*.png; do echo "restored $(basename $f) $(sha256sum $f | cut -c1-16)"; done
