# Python: the Python SDK's tests (sdk/python), and python: and http: functions
# in the end-to-end tests. Debian's python3 (run by the apps' uids, so not one
# under a private home) with venv for the pip-install test.
if ! [ -x /usr/bin/python3 ] || ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
export SPRY_REQUIRE_PYTHON=1
