"""What evaluate's numbers mean: metrics.json's notes, the terminal's and the report's column heads and legends.

A leaf with no imports, so that ``cfe evaluate``, :mod:`cfe_cli.evaluation` and :mod:`cfe_cli.report` say the
same thing about every column.
"""

from __future__ import annotations

# metrics.json's "notes": the keys whose meaning is not obvious from their name
NOTES = {"denoised_valid": "validity after a 5x5 Gaussian blur, sigma 1",
         "l2": "root-mean-square pixel difference", "sparsity": "share of pixels changed by > 0.05",
         "fd_effnetlite0": "Frechet distance of EfficientNet-Lite0 ImageNet features (1280-d, 224 px) "
                           "between counterfactuals and real test images of the target class; not "
                           "comparable to published FID (Inception-v3)",
         "dfd_effnetlite0": "unlearned deep-feature distance on EfficientNet-Lite0 stages; not LPIPS",
         "oracle_effnet": "share of counterfactuals that a linear probe on EfficientNet-Lite0 features of real "
                          "training images (oracle_effnet.safetensors) labels as the target; oracle_effnet_real: the "
                          "same for the real target test images",
         "references": "the scale of fd_effnetlite0 per pair, against the same real target images: "
                       "fd_inputs = the unchanged inputs (a counterfactual that changed nothing), "
                       "fd_real = as many other real target images from another split (what a "
                       "perfect generator would score at this set size)",
         "fid": "FID: Frechet distance of Inception-v3 (2015-12-05, the user's sha256-checked "
                "file) pool features between counterfactuals and real test images of the target "
                "class; small sets bias it upwards, compare equal set sizes only",
         "lpips": "LPIPS-Alex v0.1 between source and counterfactual (the user's AlexNet file, "
                  "sha256-checked; images under 64 px resized to 64)",
         "fva_dlib": "share of counterfactuals whose dlib face descriptor stays within 0.6 (dlib's "
                     "same-person distance) of its source's (faces only, cfe[faces])",
         "identity_distance_dlib": "mean dlib descriptor distance between source and counterfactual",
         "source_correct": "share of the row's sources whose label is the source class (the "
                           "rest are misclassified test images predicted as the source)",
         "steps": "engine steps to the threshold (optimisation methods) or decoder passes (mirror)"}


EVAL_LEGEND = {
    "Val": "validity: the classifier assigns the counterfactual to the target",
    "D.Val": "validity after a 5x5 Gaussian blur (sigma 1)",
    "O.Val": "validity by the independent oracle classifier (weights/MODEL/oracle.safetensors)",
    "O.Eff": "validity by oracle_effnet, a linear probe on EfficientNet-Lite0 ImageNet features nobody trains against",
    "O.Eff real": "the share of real target-class test images oracle_effnet labels as the target (its ceiling)",
    "%Fail": "share of inputs with no counterfactual",
    "L1": "mean |x_cf - x|", "L2": "root-mean-square pixel difference", "Spars.": "share of pixels changed by > 0.05",
    "SSIM": "structural similarity to the source", "COUT": "counterfactual transition (Khorram & Fuxin), -1..1",
    "FID": "Inception-v3 FID (your file)", "LPIPS": "LPIPS-Alex (your file)",
    "FD-eff¹": "Frechet distance to real target-class images, EfficientNet-Lite0 features",
    "DFD-eff¹": "deep-feature distance to the source, EfficientNet-Lite0 stages",
    "FVA²": "share of faces whose identity is kept",
    "steps": "engine steps (optimisation methods) or decoder passes (mirror)", "CF/s": "counterfactuals per second",
}


# The headline columns of evaluate's table: (metrics.json key, head, format); the rest (L2, sparsity, PSNR, DFD,
# KD, timings) are in metrics.json. A column is shown when any row has a value.
EVAL_COLUMNS = [("n", "n", "{}"), ("valid", "Val", "{:.3f}"), ("denoised_valid", "D.Val", "{:.3f}"),
                ("oracle_valid", "O.Val", "{:.3f}"), ("oracle_effnet", "O.Eff", "{:.3f}"),
                ("oracle_effnet_real", "O.Eff real", "{:.3f}"), ("fail_pct", "%Fail", "{:.1f}"),
                ("l1", "L1", "{:.3f}"), ("ssim", "SSIM", "{:.3f}"), ("cout", "COUT", "{:.3f}"),
                ("fid", "FID", "{:.2f}"), ("lpips", "LPIPS", "{:.3f}"), ("fd_effnetlite0", "FD-eff¹", "{:.2f}"),
                ("fva_dlib", "FVA²", "{:.3f}"),
                ("steps_mean", "steps", "{:.1f}"), ("cf_per_second", "CF/s", "{:.1f}")]
REFLECTION_NOTE = ("mirror@reflection: the full reflection (k = 1) scored like a counterfactual; every other metric "
                   "(L2, sparsity, PSNR, KD, DFD, timings) is in metrics.json")
FOOTNOTES = ("¹ EfficientNet-Lite0 features: not comparable to published FID / LPIPS",
             "² share within dlib's 0.6 same-person distance")
