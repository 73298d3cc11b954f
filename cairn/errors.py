"""The exceptions a cairn client raises (declared in transport.errors, where the
server side raises them too)."""

from transport.errors import *  # noqa: F401,F403
from transport.errors import CairnError, ERRORS_BY_CODE, TimeoutError_ as RequestTimeoutError  # noqa: F401
