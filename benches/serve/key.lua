-- wrk script: an allowed API request with the key in $KEY.
wrk.headers["x-api-key"] = os.getenv("KEY")
