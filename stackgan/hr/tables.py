"""Human-rank metrics files in the tables: `stackgan report` reads a profile's metrics files as
{experiment: record}; an HR file (`hr-<dataset>.json`, written by `stackgan hr aggregate`) holds
several models' numbers, so this folds each into its model's record as the metric `hr` (the key
the paper rows of Tables 2-3 ask for), with the study's protocol as its `protocols` entry."""

from stackgan.errors import UserError


def is_hr_record(record) -> bool:
    return isinstance(record.get("human_study"), dict)


def fold_human_ranks(records: dict, where) -> dict:
    """`records` with every HR file folded into its models' records (and itself left out)."""
    folded = {name: r for name, r in records.items() if not is_hr_record(r)}
    for name, record in sorted(records.items()):
        if not is_hr_record(record):
            continue
        for key, protocol in sorted(record.get("protocols", {}).items()):
            experiment = protocol.get("experiment")
            if key not in record["metrics"] or not isinstance(experiment, str):
                continue
            target = folded.setdefault(experiment, {"metrics": {}})
            if "hr" in target["metrics"]:
                raise UserError(f"{where}/{name}.json gives {experiment} an HR that another human-rank file "
                                f"of {where} gives too; keep one study per experiment there")
            target = folded[experiment] = {**target, "metrics": {**target["metrics"], "hr": record["metrics"][key]},
                                           "protocols": {**target.get("protocols", {}), "hr": protocol}}
    return folded
