# curl with HTTP/2 (nghttp2): the gateway's HTTP/2 tests drive it
# (--http2-prior-knowledge, --http2 upgrade and over TLS).
if ! curl --version 2>/dev/null | grep -q HTTP2; then
	apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi
export SPRY_REQUIRE_CURL=1
