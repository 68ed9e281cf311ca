"""What the firmware fixes: audio formats, timeouts, the default framing.

Facts read from the firmware (github:78/xiaozhi-esp32); every module of the
integration and the simulator take them from here.
"""

from typing import Final

# Audio parameters of the firmware (main/audio/audio_service.h, protocol.h).
UPLINK_SAMPLE_RATE: Final = 16000
UPLINK_FRAME_DURATION_MS: Final = 60
DOWNLINK_SAMPLE_RATE: Final = 24000
DOWNLINK_FRAME_DURATION_MS: Final = 60
AUDIO_CHANNELS: Final = 1
AUDIO_FORMAT: Final = "opus"
TRANSPORT_WEBSOCKET: Final = "websocket"

# The device gives up on the channel when no server hello arrives within this time
# (websocket_protocol.cc OpenAudioChannel).
SERVER_HELLO_TIMEOUT_S: Final = 10.0
# The device considers the channel dead after this long without any incoming frame
# (protocol.cc IsTimeout).
DEVICE_IDLE_TIMEOUT_S: Final = 120.0

# The binary framing a WebSocket client speaks when its handshake names none
# (websocket_protocol.h version_ = 1).
DEFAULT_PROTOCOL_VERSION: Final = 1
