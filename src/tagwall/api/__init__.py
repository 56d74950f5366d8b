"""The controller's REST API: a thin HTTP edge over model, evaluator, compiler and store.

Owns: the HTTP shapes (routes under ``/api/v1``, request and response bodies, the OpenAPI
document at ``/openapi.json``), content negotiation for manifests (YAML or JSON), the request
size cap, and the rendering of every error as ``application/problem+json``.

Never holds policy logic: validation is ``tagwall.model.load``, answers come from
``tagwall.evaluator`` and ``tagwall.compiler``, persistence and atomicity from
``tagwall.store``.  Nothing in the core may import this package (imports point one way, see
STYLE.md); it must not import the CLI, the agent or the data path.

Modules: ``_app`` (factory, error handlers), ``_objects`` (CRUD, apply), ``_drafts``,
``_query`` (trace, reach, programs), ``_live`` (validated writes, the cached live Config),
``_http`` (body reading, size cap, problem+json).
"""

from ..kinds import KIND_OF_PLURAL
from ._app import API_PREFIX, create_app
from ._http import MANIFEST_MEDIA_TYPES, MAX_BODY_BYTES

__all__ = ["API_PREFIX", "KIND_OF_PLURAL", "MANIFEST_MEDIA_TYPES", "MAX_BODY_BYTES", "create_app"]
