"""The message bus: wire protocol, broker, event log, clients (ZeroMQ, MQTT), RPC, keys.

`connect(url)` gives a client for any supported bus:
- `ipc:///run/dir/bus`, `tcp://host:port`: the ZeroMQ broker (`mlgym bus serve`)
- `mqtt://[user@]host:port[?tls=1&prefix=mlgym]`: an MQTT broker (with `mlgym bus record`; the
  password from $MLGYM_MQTT_PASSWORD or a file, docs/mqtt.md)
- a run directory: the bus named in its bus.json (ZeroMQ broker) or mqtt.json (MQTT recorder)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlgym.bus.base import BusClientBase, RpcError, Subscription

MQTT_DESCRIPTOR = "mqtt.json"  # what `mlgym bus record` writes in its run directory


def is_mqtt(url: str | Path | None) -> bool:
    """Whether `url` names an MQTT bus (`mqtt://`, `mqtts://`)."""
    return str(url or "").startswith(("mqtt://", "mqtts://"))


def connect(url: str | Path, *, run: str = "", sender: str = "", curve: Any = None, **kw: Any) -> BusClientBase:
    """A (not yet connected) client for `url`; use `async with connect(url) as bus:`.
    `curve` (ZeroMQ over tcp): a ClientCurve, or the folder made by `mlgym keys init`."""
    url = str(url)
    if "://" not in url and (Path(url) / MQTT_DESCRIPTOR).exists():
        import json

        url = json.loads((Path(url) / MQTT_DESCRIPTOR).read_text())["url"]
    if is_mqtt(url):
        from mlgym.bus.mqtt import MqttBusClient  # lazy: aiomqtt only when used

        return MqttBusClient(url, run=run, sender=sender, **kw)
    from mlgym.bus import endpoints
    from mlgym.bus.client import BusClient
    from mlgym.bus.security import ClientCurve, client_curve

    if "://" not in url and (Path(url) / endpoints.DESCRIPTOR).exists():
        url = endpoints.url_of_run(url)
    if curve is not None and not isinstance(curve, ClientCurve):
        curve = client_curve(curve)
    return BusClient(url, run=run, sender=sender, curve=curve, **kw)


__all__ = ["BusClientBase", "RpcError", "Subscription", "connect", "is_mqtt"]
