# MQTT: the events tests publish and subscribe with Debian's mosquitto
# clients (mosquitto_pub, mosquitto_sub) against the node's embedded broker.
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients >/dev/null
fi
export SPRY_REQUIRE_MOSQUITTO=1
