"""A dynamic batch of requests through the task head: one head call (one backend run per batch_size windows)
for all requests that share options, and every request answered on its own, its errors included.

Requests come already decoded and checked (protocol.read_request). What only the head can find out (a
fill-mask text without the mask token, a question too long for max_seq_len) fails the whole call; the
requests of that call are then run one by one, so only the bad one gets the error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from distilrt.errors import DistilrtError, UserInputError
from distilrt.serve.protocol import Request


def answer_batch(head, task: str, requests: Sequence[Request | DistilrtError]) -> list:
    """The result (the pipeline's answer for that example) or the error for each request, in order.

    A request given as an error (it failed its checks) is answered with that error. UserInputErrors stay per
    request; any other DistilrtError (the backend failed) is given to every request of the failed call.
    """
    answers: list = [request if isinstance(request, DistilrtError) else None for request in requests]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        if not isinstance(request, DistilrtError):
            groups[request.options].append(index)
    for indexes in groups.values():
        group = [requests[index] for index in indexes]
        try:
            results = _call(head, task, group)
        except UserInputError as e:
            results = [e] if len(group) == 1 else [_call_one(head, task, request) for request in group]
        except DistilrtError as e:
            results = [e] * len(group)
        for index, result in zip(indexes, results):
            answers[index] = result
    return answers


def _call_one(head, task: str, request: Request):
    try:
        return _call(head, task, [request])[0]
    except DistilrtError as e:
        return e


def _call(head, task: str, requests: list[Request]) -> list:
    """One head call for requests with the same options; the head gives one result per example."""
    options = requests[0].option_dict()
    if task == "question-answering":
        results = head([{"question": r.texts[0], "context": r.texts[1]} for r in requests], **options)
    else:
        results = head([r.texts[0] for r in requests], **options)
    # The heads, like the pipelines, give the result itself for a single example and a list for several.
    return [results] if len(requests) == 1 else results
