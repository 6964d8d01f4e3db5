"""Label Studio's JSON: import tasks with predictions, the labeling config, and reading annotations back.

Import format (docs: "Import pre-annotated data into Label Studio"): a JSON list of tasks
``{"data": {...}, "predictions": [{"model_version", "score", "result": [{"from_name", "to_name", "type":
"choices", "value": {"choices": [label]}}]}]}``; ``from_name``/``to_name`` name the ``<Choices>`` and
``<Text>`` tags of the labeling config below. Export format ("Label Studio JSON format of annotated
tasks"): the same tasks with ``"annotations": [{"result": [...], "was_cancelled": bool, ...}]``, the task's
own ``id`` at the top level and ours in ``data.id``. (Label Studio's CSV and JSON-MIN exports flatten ``data``,
where our ``id`` collides with its task id: import the JSON export.)
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import quoteattr

FROM_NAME = "label"  # the <Choices name=...> of the labeling config
TO_NAME = "text"  # the <Text name=...> of the labeling config (and the task's data key with the text)


def labeling_config(labels: list[str]) -> str:
    """The Label Studio labeling config (XML) the exported tasks match: the text and one choice per label."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f'  <Text name="{TO_NAME}" value="$text"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInLine="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def task(row: dict[str, Any]) -> dict[str, Any]:
    """One import task: the row's id/text/why in ``data``, its label and confidence as a prediction."""
    data = {"id": row["id"], "text": row["text"], "reason": row["reason"], "predicted": row["label"],
            "confidence": row["confidence"], "output": row["output"]}
    prediction = {
        "model_version": row["fingerprint"] or "batchlabel",
        "score": row["confidence"],
        "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                    "value": {"choices": [row["label"]]}}],
    }
    return {"data": data, "predictions": [prediction]}


def _choice(annotation: dict[str, Any]) -> list[str]:
    for item in annotation.get("result") or []:
        if item.get("type", "choices") == "choices" and item.get("from_name", FROM_NAME) == FROM_NAME:
            return list((item.get("value") or {}).get("choices") or [])
    return []


def reviewed_rows(tasks: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The reviewed rows of a Label Studio JSON export: [{id, text, gold, predicted, reason, output}].

    Per task the latest (``updated_at``, else list order) annotation that was not cancelled counts; tasks
    without one are counted as ``unreviewed``; an annotation with no or several choices as ``no_single_choice``;
    tasks whose annotators disagree are kept (latest wins) and counted as ``disagreements``.
    """
    if not isinstance(tasks, list):
        raise ValueError("a Label Studio JSON export is a list of tasks")
    rows, counts = [], {"tasks": len(tasks), "unreviewed": 0, "no_single_choice": 0, "disagreements": 0}
    for entry in tasks:
        data = entry.get("data") or {} if isinstance(entry, dict) else {}
        done = [a for a in (entry.get("annotations") or []) if isinstance(a, dict) and not a.get("was_cancelled")] \
            if isinstance(entry, dict) else []
        if not done:
            counts["unreviewed"] += 1
            continue
        done = sorted(enumerate(done), key=lambda pair: (str(pair[1].get("updated_at") or ""), pair[0]))
        choices = _choice(done[-1][1])
        if len(choices) != 1:
            counts["no_single_choice"] += 1
            continue
        if len({tuple(_choice(a)) for _, a in done}) > 1:
            counts["disagreements"] += 1
        rows.append({"id": data.get("id"), "text": data.get(TO_NAME), "gold": choices[0],
                     "predicted": data.get("predicted"), "reason": data.get("reason"),
                     "output": data.get("output")})
    return rows, counts
