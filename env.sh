# Source this file to run THIS clone's soads and jobs:   source env.sh
#
# Activates the project's venv (~/.cache/soads/venv, made by `make venv`), puts this clone first
# on PYTHONPATH (the venv is shared by every clone and its `soads` script would otherwise run
# whichever clone last installed itself) and sets what Spark's Python workers and the driver
# need. Afterwards both `soads ...` and `python jobs/<job>.py ...` run this clone's code.

if [ -n "${ZSH_VERSION:-}" ]; then
    _soads_env="${(%):-%x}"
else
    _soads_env="${BASH_SOURCE[0]:-$0}"
fi
_soads_root="$(cd "$(dirname "$_soads_env")" && pwd)"
_soads_venv="${SOADS_CACHE:-$HOME/.cache/soads}/venv"

if [ ! -x "$_soads_venv/bin/python" ]; then
    echo "env.sh: no venv at $_soads_venv: run 'make venv' in $_soads_root first" >&2
    unset _soads_env _soads_root _soads_venv
    return 1 2>/dev/null || exit 1
fi

# shellcheck disable=SC1091
. "$_soads_venv/bin/activate"
# this clone first, even when another clone (or this one, further back) is on PYTHONPATH already
_soads_rest="$(printf '%s' "${PYTHONPATH:-}" | tr ':' '\n' | grep -vxF "$_soads_root" | paste -sd: -)"
export PYTHONPATH="$_soads_root${_soads_rest:+:$_soads_rest}"
export PYSPARK_PYTHON="$_soads_venv/bin/python"
export PYSPARK_DRIVER_PYTHON="$_soads_venv/bin/python"
export SPARK_LOCAL_IP=127.0.0.1
# the development database password `make up` writes (conf/services.toml), unless one is set
_soads_pw="${SOADS_CACHE:-$HOME/.cache/soads}/services/mariadb/password"
if [ -z "${SOADS_DB_PASSWORD:-}" ] && [ -z "${SOADS_DB_PASSWORD_FILE:-}" ] && [ -s "$_soads_pw" ]; then
    export SOADS_DB_PASSWORD_FILE="$_soads_pw"
fi
echo "soads: $_soads_root (venv $_soads_venv)" >&2
unset _soads_env _soads_root _soads_venv _soads_rest _soads_pw
