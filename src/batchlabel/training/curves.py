"""Training curves (loss per step, validation loss/accuracy per evaluation) as a PNG."""

from __future__ import annotations

from batchlabel.report.pictures import figure_png


def curves_png(log_history: list[dict]) -> bytes:
    """Plot the Trainer's log history: train loss, eval loss, eval accuracy / macro-F1 against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [e for e in log_history if "eval_loss" in e and "step" in e]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        left.plot([s for s, _ in train], [v for _, v in train], label="train loss", color="tab:blue")
    if evals:
        left.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation loss",
                  color="tab:orange")
        for key, name in (("eval_accuracy", "accuracy"), ("eval_macro_f1", "macro-F1")):
            points = [(e["step"], e[key]) for e in evals if key in e]
            if points:
                right.plot([s for s, _ in points], [v for _, v in points], "o-", label=f"validation {name}")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.set_title("loss")
    left.legend(loc="best")
    right.set_xlabel("step")
    right.set_ylim(0, 1.02)
    right.set_title("validation metrics")
    if right.get_lines():
        right.legend(loc="best")
    return figure_png(fig, dpi=100)
