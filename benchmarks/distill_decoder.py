"""Distil a model folder's Mirror-CFE skip decoder into a narrower student (issue 33's "cheaper
inference decoder"; experiment, docs/experiments/2026-12-07-speed.md section 5).

    python benchmarks/distill_decoder.py MODEL WIDTH MIN_WIDTH TIME_LIMIT_S OUT [LAMBDA_KL]
    python benchmarks/distill_decoder.py mnist 16 8 3000 local/mnist_student16.safetensors 0.1

The student is a MirrorDecoder with the teacher's skips and CSP thresholds and fewer channels.
Each step draws 64 training images, targets (runner-up or a random other class) and k (half
U[0, 1], half U[0.3, 0.8], where 1st CFEs lie), and fits the teacher's decoded image (L1) plus the
classifier's verdict on it (KL at temperature 2, weight LAMBDA_KL ramped in over the first 20 %).
Adam 2e-3, cosine over the time limit, one thread. The output loads with ``--decoder OUT``.
"""
import math
import os
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from cfe_cli.data import load_dataset
from cfe_cli.methods.mirror import MirrorCFE
from cfe_cli.models.generators import MirrorDecoder
from cfe_cli.models.weights import load_classifier, load_decoder, save_module

model, width, minw, limit, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
lam_logit = float(sys.argv[6]) if len(sys.argv) > 6 else 0.1
torch.manual_seed(0)
torch.set_num_threads(1)
folder = f"weights/{model}"
clf = load_classifier(f"{folder}/classifier.safetensors").model.eval()
for p in clf.parameters():
    p.requires_grad_(False)
teacher, teacher_info = load_decoder(folder)
cfe = MirrorCFE(clf, teacher)
student = MirrorDecoder(replace(teacher.config, width=width, min_width=minw))
stu = MirrorCFE(clf, student)  # the same skip/CSP decoding path (MirrorCFE._generate) for the student
train = load_dataset(model, "train", root=os.environ["CFE_DATA_DIR"])
X = train.images
K = clf.head.weight.shape[0]
opt = torch.optim.Adam(student.parameters(), lr=2e-3)
B, t0, step = 64, time.time(), 0
while time.time() - t0 < limit:
    frac = min((time.time() - t0) / limit, 1.0)
    for g in opt.param_groups:
        g["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * frac))
    idx = torch.randint(len(X), (B,))
    x = X[idx].float()
    with torch.inference_mode():
        logits = clf(x)
        ru = logits.topk(2, 1).indices[:, 1]
        rnd = (logits.argmax(1) + torch.randint(1, K, (B,))) % K
        tgt = torch.where(torch.rand(B) < 0.5, ru, rnd)
        prep = cfe.prepare(x, tgt)
        k = torch.where(torch.rand(B) < 0.5, torch.rand(B), 0.3 + 0.5 * torch.rand(B))
        rows = torch.arange(B)
        t_img = cfe._generate(prep, rows, k)
        t_log = clf(t_img)
    # inference tensors -> ordinary ones, so the student's graph may keep them for backward
    prep = {n: [s.clone() for s in v] if isinstance(v, list) else v.clone() for n, v in prep.items()}
    t_img, t_log, k = t_img.clone(), t_log.clone(), k.clone()
    s_img = stu._generate(prep, rows, k)
    s_log = clf(s_img)
    l1 = (s_img - t_img).abs().mean()
    T = 2.0  # the classifier's verdicts on student vs teacher images (KL at temperature T), ramped in
    ll = F.kl_div(F.log_softmax(s_log / T, 1), F.log_softmax(t_log / T, 1), log_target=True, reduction="batchmean")
    loss = l1 + lam_logit * min(1.0, frac / 0.2) * ll
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    step += 1
    if step % 200 == 0:
        agree = (s_log.argmax(1) == t_log.argmax(1)).float().mean().item()
        print(f"step {step} [{time.time() - t0:.0f} s] l1 {l1.item():.4f} kl {ll.item():.3f} "
              f"argmax agree {agree:.3f}", flush=True)
info = dict(teacher_info)
info["distilled"] = {"from": f"{folder}/mirror.safetensors", "steps": step, "seconds": round(time.time() - t0),
                     "lambda_logit": lam_logit, "width": width, "min_width": minw}
info.pop("history", None)
save_module(out, student, kind="mirror", config=student.config.to_dict(), info=info)
print("saved", out, step, "steps")
