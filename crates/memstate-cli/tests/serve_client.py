#!/usr/bin/env python3
"""A client that is not Rust, against two or more `memstate serve` nodes on one
stream (a journal, a topic, a Kinesis stream).

Usage: serve_client.py URL_A URL_B [URL ...]. A is started with node id node-a and
--body-limit 4096. Writes go to A and B; every node must read them and end with
the same state. Exits non-zero on the first failed check. Standard library only.
"""

import json
import sys
import threading
import urllib.error
import urllib.request
import uuid

NODES = [url.rstrip("/") for url in sys.argv[1:]]
if len(NODES) < 2:
    sys.exit("usage: serve_client.py URL_A URL_B [URL ...]")
A, B = NODES[0], NODES[1]
checks = 0


def call(method, url, body=None, headers=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            text = res.read().decode()
            return res.status, dict(res.headers), text
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def check(condition, what, detail=""):
    global checks
    checks += 1
    if not condition:
        print(f"FAILED: {what} {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def as_json(text):
    return json.loads(text) if text else None


# Every node is up and caught up.
for node in NODES:
    status, _, body = call("GET", node + "/healthz")
    check(status == 200, f"{node} /healthz")
    status, _, body = call("GET", node + "/readyz")
    check(status == 200, f"{node} /readyz", body)

# A write on A, read on B at its index.
status, headers, body = call("POST", A + "/commands/put", {"key": "doc/1", "value": {"title": "hello", "n": 1}})
check(status == 200, "put on A", body)
index = as_json(body)["index"]
check(headers.get("memstate-index") == str(index), "the write's index is in the memstate-index header", headers)
status, _, body = call("GET", f"{B}/queries/get?key=doc/1&consistency=at_least:{index}")
check(status == 200 and as_json(body)["value"] == {"title": "hello", "n": 1}, "B reads A's write at its index", body)
for node in NODES[1:]:
    status, _, body = call("GET", f"{node}/queries/get?key=doc/1&consistency=read_your_writes", headers={"Memstate-Last-Write": str(index)})
    check(status == 200 and as_json(body)["version"] == index, f"{node}: read_your_writes with the write's index from A", body)

# A retry with the same Idempotency-Key, sent to the other node, is applied once.
key = "retry-" + str(uuid.uuid4())
status, _, first = call("POST", A + "/commands/increment", {"key": "counter", "by": 5}, {"Idempotency-Key": key})
check(status == 200 and not as_json(first)["already_applied"], "first increment on A", first)
status, _, second = call("POST", B + "/commands/increment", {"key": "counter", "by": 5}, {"Idempotency-Key": key})
# B answers with the first outcome: either it meets the first copy while its own
# is on the way (and answers with that copy's output), or it finds the id
# already applied (already_applied, no output). Either way, the same index.
check(status == 200, "the retry on B succeeds", second)
check(as_json(second)["index"] == as_json(first)["index"], "the retry answers with the first index", second)
for node in NODES:
    _, _, body = call("GET", node + "/queries/get?key=counter&consistency=linearizable")
    check(as_json(body)["value"] == 5, f"{node}: the increment counted once", body)

# Concurrent writers on both nodes; both nodes end with the same state.
errors = []


def writer(node, prefix, n):
    for i in range(n):
        status, _, body = call("POST", node + "/commands/increment", {"key": "shared"})
        if status != 200:
            errors.append(body)
        status, _, body = call("POST", node + "/commands/put", {"key": f"{prefix}/{i}", "value": i})
        if status != 200:
            errors.append(body)


threads = [threading.Thread(target=writer, args=(node, f"w{k}", 25)) for k, node in enumerate((A, B, A, B))]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(not errors, "every concurrent write succeeded", errors[:3])
views = []
for node in NODES:
    _, _, shared = call("GET", node + "/queries/get?key=shared&consistency=linearizable")
    _, _, listed = call("GET", node + "/queries/list?prefix=w&limit=1000&consistency=linearizable")
    _, _, count = call("GET", node + "/queries/count?prefix=w&consistency=linearizable")
    views.append((as_json(shared)["value"], as_json(listed), as_json(count)))
check(views[0][0] == 100, "100 increments from 4 writers on 2 nodes", views[0][0])
check(views[0][2] == 100, "100 keys written", views[0][2])
check(all(view == views[0] for view in views), f"all {len(NODES)} nodes hold the same state")

# Bad input.
status, _, body = call("POST", A + "/commands/put", raw=b'{"key": "x", "value": ')
check(status == 400 and "not valid JSON" in as_json(body)["message"], "malformed JSON is 400 naming the problem", body)
status, _, body = call("POST", A + "/commands/put", {"key": "x"})
check(status == 400 and "value" in as_json(body)["message"], "a missing field is 400 naming it", body)
status, _, body = call("POST", A + "/commands/launch", {})
check(status == 404 and as_json(body)["error"] == "unknown_command", "unknown command is 404", body)
status, _, body = call("GET", A + "/queries/everything")
check(status == 404 and as_json(body)["error"] == "unknown_query", "unknown query is 404", body)
status, _, body = call("GET", A + "/queries/get?key=x&consistency=sometimes")
check(status == 400 and "read_your_writes" in as_json(body)["message"], "a bad consistency is 400 listing the levels", body)
status, _, body = call("POST", A + "/commands/put", raw=json.dumps({"key": "big", "value": "x" * 10000}).encode())
check(status == 413 and as_json(body)["error"] == "body_too_large", "a body over the limit is 413", body)
status, headers, body = call("POST", A + "/commands/compare_and_set", {"key": "doc/1", "expected": {"title": "other"}, "value": 0})
check(status == 409 and as_json(body)["index"] > 0, "a refused compare-and-set is 409 with its index", body)
_, _, body = call("GET", B + "/queries/get?key=big&consistency=linearizable")
check(as_json(body) is None, "nothing of the refused requests was applied", body)

# Operations endpoints.
status, headers, body = call("GET", A + "/metrics")
check(status == 200 and headers.get("content-type", "").startswith("text/plain"), "/metrics is Prometheus text", headers)
check('memstate_commands_total{node="node-a",outcome="applied"}' in body, "/metrics counts A's commands", body[:300])
check('memstate_command_latency_seconds_bucket{node="node-a"' in body, "/metrics has A's latency histogram", body[:300])
status, _, body = call("GET", A + "/openapi.json")
doc = as_json(body)
check(status == 200 and "/commands/put" in doc["paths"] and "/queries/list" in doc["paths"], "/openapi.json names commands and queries")
status, _, body = call("GET", B + "/status")
s = as_json(body)
check(s["status"] == "running" and s["applied_index"] >= views[0][2], "/status on B", body[:200])

print(f"{checks} passed, 0 failed")
