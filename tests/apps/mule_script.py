"""A mule's own script (mule = mule_script.py): a loop over the messages for it and its
farm, as uWSGI mule scripts are written."""

import json
import os

import uwsgi

RECORD = os.environ["MULE_RECORD"]

with open(RECORD, "a") as f:
    f.write(json.dumps({"kind": "script_started", "mule": uwsgi.mule_id(), "pid": os.getpid()}) + "\n")

while True:
    message = uwsgi.mule_get_msg()
    with open(RECORD, "a") as f:
        f.write(json.dumps({"kind": "script_got", "msg": message.decode(), "mule": uwsgi.mule_id(),
                            "pid": os.getpid()}) + "\n")
    if message == b"quit":
        break
