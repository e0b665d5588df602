-- wrk script: POST /v1/check with the key in $KEY.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"key":"%s","app":"acme","op":"agents.get"}', os.getenv("KEY"))
