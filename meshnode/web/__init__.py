"""The browser client: a thin web page that joins a room through its node.

The node serves the page and its scripts (``routes``), answers the browser's WebRTC offer
(``browser_link``) and runs one ``BrowserSession`` per browser on a ``client`` data channel
(``session``, which documents the JSON protocol). The browser does not run the scene CRDT:
it shows the state its node pushes and sends edit requests, which the node signs with its
identity and acknowledges once they are durable.
"""

from meshnode.web.browser_link import (
    BrowserConnection,
    BrowserLinks,
    InvalidOffer,
    TooManyBrowsers,
    answer_browser_offer,
)
from meshnode.web.rooms import DelegatingRoom, ReadOnlyRoom, RoomAccess
from meshnode.web.routes import BROWSER_LINKS, STATIC_DIR, add_web_routes
from meshnode.web.session import BrowserSession, SessionLimits

__all__ = [
    "BROWSER_LINKS",
    "STATIC_DIR",
    "BrowserConnection",
    "BrowserLinks",
    "BrowserSession",
    "DelegatingRoom",
    "InvalidOffer",
    "ReadOnlyRoom",
    "RoomAccess",
    "SessionLimits",
    "TooManyBrowsers",
    "add_web_routes",
    "answer_browser_offer",
]
