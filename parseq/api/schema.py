"""The OpenAPI schema says what errors each operation can answer, in the one shape they all have."""

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "On 400: the problems of each field (or `non_field_errors`).",
            "additionalProperties": {},
        },
        "run": {"type": "object", "description": "On 503 from run/: the run the broker did not take, in `error`."},
    },
    "required": ["detail", "code"],
}
ERROR_DESCRIPTIONS = {
    "400": "Invalid input: `errors` names each field and what is wrong with it.",
    "401": "Not signed in: use HTTP Basic, a session, or `Authorization: Token <key>`.",
    "403": "Signed in, but without the permission this needs (`detail` names it), or a cross-site request.",
    "404": "No such object (or page).",
    "409": "The object is not in a state that allows this (a run that has already ended).",
    "415": "Unsupported content type: send JSON or multipart.",
    "429": "Too many failed sign-ins for this user or from this address: `Retry-After` says when to try again.",
    "503": "The database is unreachable (`database_unavailable`: nothing was changed), or on run/ the broker "
    "did not take the run (`broker_unavailable`: the run, in `error`, says why). `Retry-After` says when to retry.",
}


# What a created object leads to: OpenAPI links, for readers of the docs and for the fuzzer's chains.
LINKS = {
    ("/api/parsers/", "post", "201"): {
        "parameter": ("id", "$response.body#/id"),
        "targets": [("/api/parsers/{id}/", m) for m in ("get", "patch", "delete")]
        + [("/api/parsers/{id}/run/", "post"), ("/api/parsers/{id}/script/", "get")],
    },
    ("/api/parsers/{id}/run/", "post", "202"): {
        "parameter": ("run_id", "$response.body#/run_id"),
        "targets": [
            ("/api/runs/{run_id}/", "get"),
            ("/api/runs/{run_id}/log", "get"),
            ("/api/runs/{run_id}/cancel/", "post"),
        ],
    },
}


def add_links(result, generator, request, public):
    """drf-spectacular postprocessing hook: link each created object to what can be done with it next."""
    paths = result.get("paths", {})
    for (path, method, status), link in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        name, expression = link["parameter"]
        response["links"] = {
            paths[target][verb]["operationId"]: {
                "operationId": paths[target][verb]["operationId"],
                "parameters": {name: expression},
            }
            for target, verb in link["targets"]
            if verb in paths.get(target, {})
        }
    return result


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: document 400/401/403/404/415/429/503 wherever they happen, all as Error."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            codes = ["401", "403", "429", "503"]
            if "{" in path or method == "get":
                codes.append("404")
            has_body = method in ("post", "put", "patch") and "requestBody" in operation
            if has_body or any(parameter.get("in") == "query" for parameter in operation.get("parameters", [])):
                codes.append("400")
            if has_body:
                codes.append("415")
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter["name"] == "id":
                    # A parser's id: routed as 1 to 18 digits, and a number in every response.
                    parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
                if parameter.get("in") == "query":
                    # As HTML forms send them, an empty filter means no filter.
                    parameter["allowEmptyValue"] = True
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code], "content": reference})
            for code, response in responses.items():
                if code in ERROR_DESCRIPTIONS:  # errors an operation declares itself have the one shape too
                    response.setdefault("content", reference)
    return result


def optional_bodies_of_two_types(result, generator, request, public):
    """drf-spectacular postprocessing hook: a body offered as multipart or JSON is marked optional.

    openapi-python-client (0.29.1, its issue #1451) writes `| Unset` into the signature of an
    operation whose body has several content types, but imports `Unset` only when the body is
    optional: marked required, the generated client does not import. Marked optional, nothing
    changes for a client that sends no body: the server answers 400 naming the missing fields.
    """
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body and len(body.get("content", {})) > 1:
                body["required"] = False
    return result
