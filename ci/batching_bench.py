"""Length-aware vs arrival-order batching of one QA bundle, on the same held-out SQuAD questions.

    python ci/batching_bench.py artifacts/<checkpoint>/<variant> --questions 400 [--threads 2] >> results.jsonl

Both heads run in this process, taking turns (arrival order, then length-aware, twice), so load changes hit
both alike; the faster of each pair is reported, with how many answers the two orders give alike (fp32 all;
dynamic int8 quantizes each batch with its own scale, so its answers may depend on the batch composition).
"""

from __future__ import annotations

import argparse
import json
import time

import distilrt
from distilrt.bench.workloads import parse_workload, workload_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: physical cores)")
    args = parser.parse_args()
    items = workload_set(parse_workload(f"squad-dev:{args.questions}"), None, None, 0).inputs
    questions, contexts = [i["question"] for i in items], [i["context"] for i in items]
    heads = {order: distilrt.load(args.bundle, batch_size=args.batch, sort_by_length=order,
                                  intra_op_num_threads=args.threads) for order in (False, True)}
    seconds: dict[bool, list[float]] = {False: [], True: []}
    answers = {}
    for head in heads.values():  # warm-up
        head(question=questions[: args.batch], context=contexts[: args.batch])
    for _ in range(2):
        for order, head in heads.items():
            started = time.perf_counter()
            answers[order] = head(question=questions, context=contexts)
            seconds[order].append(time.perf_counter() - started)
    print(json.dumps({
        "bundle": args.bundle, "questions": args.questions, "batch": args.batch,
        "seconds_sorted": seconds[True], "seconds_arrival": seconds[False],
        "qps_sorted": args.questions / min(seconds[True]), "qps_arrival": args.questions / min(seconds[False]),
        "same_answer": sum(a["answer"] == b["answer"] for a, b in zip(answers[True], answers[False])),
    }))


if __name__ == "__main__":
    main()
