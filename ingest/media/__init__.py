"""The one media adapter: everything liuhen knows about containers, codecs and pixels.

    probe()                   what a file is (PyAV in-process for video/audio, Pillow for images)
                              (probing.py)
    make_proxy()              a browser-playable MP4 (or M4A) via the ffmpeg binary (proxy.py)
    make_thumbnails()         evenly spaced stills via OpenCV seeking (stills.py)
    make_contact_sheet()      those stills in one grid (stills.py)
    make_waveform()           a PNG of an audio-only item, decoded as a stream (audio.py)
    make_photo_derivatives()  display image and thumbnail of a photo (photos.py)
    derive()                  whichever of these fit the item; failures become Problems
                              (derivatives.py)

The values they pass around are in values.py, the running of tools in tools.py. Callers import
the names from this package, never from a topic module.

The original is only ever opened for reading. Formats are detected from content, never from the
file name: libav is handed a reader without a name (it would otherwise trust the extension),
and ffmpeg is told the demuxer that the probe found.
"""

from ingest.media.audio import WAVEFORM_SIZE, make_waveform
from ingest.media.derivatives import derive
from ingest.media.photos import make_photo_derivatives
from ingest.media.probing import probe
from ingest.media.proxy import PROXY_MAX_SHORT_SIDE, make_proxy, proxy_command
from ingest.media.stills import make_contact_sheet, make_thumbnails
from ingest.media.tools import tool_versions
from ingest.media.values import DISPLAY_MAX_PX, THUMB_MAX_PX, Derived, Limits, ProbeResult, Recipe

__all__ = [
    "DISPLAY_MAX_PX",
    "PROXY_MAX_SHORT_SIDE",
    "THUMB_MAX_PX",
    "WAVEFORM_SIZE",
    "Derived",
    "Limits",
    "ProbeResult",
    "Recipe",
    "derive",
    "make_contact_sheet",
    "make_photo_derivatives",
    "make_proxy",
    "make_thumbnails",
    "make_waveform",
    "probe",
    "proxy_command",
    "tool_versions",
]
