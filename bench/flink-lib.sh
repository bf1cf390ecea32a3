# Sourced by the Flink setups of bench/ (flink-kafka, flink-opensearch):
# parses `[--flink DIR]` from the arguments and sets LIB to Flink 2.3.0's
# jars (pyflink/lib of the baseline's virtualenv: DIR, else
# $FLINK_BASELINE_HOME, else $HOME/.cache/flink-baseline), running the shared
# workspace's bench/flink/setup.sh (or $FLINK_BASELINE_SRC/setup.sh) first
# when the baseline is not set up yet. Expects HERE, the sourcing script's
# directory.
FLINK_HOME_DIR="${FLINK_BASELINE_HOME:-$HOME/.cache/flink-baseline}"
while [ $# -gt 0 ]; do
  case "$1" in
    --flink) FLINK_HOME_DIR="${2:?--flink needs a directory}"; shift 2 ;;
    --flink=*) FLINK_HOME_DIR="${1#--flink=}"; shift ;;
    *) echo "usage: $0 [--flink DIR]" >&2; exit 2 ;;
  esac
done
FLINK_VERSION="2.3.0"

flink_lib() { echo "$FLINK_HOME_DIR"/venv/lib/python3*/site-packages/pyflink/lib; }
LIB="$(flink_lib)"
if [ ! -f "$LIB/flink-dist-$FLINK_VERSION.jar" ]; then
  BASELINE_SRC="${FLINK_BASELINE_SRC:-$HERE/../../../shared/bench/flink}"
  [ -f "$BASELINE_SRC/setup.sh" ] || { echo "no Flink $FLINK_VERSION under $FLINK_HOME_DIR and no baseline setup.sh at $BASELINE_SRC" >&2; exit 1; }
  echo "setting up the Flink baseline in $FLINK_HOME_DIR" >&2
  FLINK_BASELINE_HOME="$FLINK_HOME_DIR" bash "$BASELINE_SRC/setup.sh" >&2
  LIB="$(flink_lib)"
fi
[ -f "$LIB/flink-dist-$FLINK_VERSION.jar" ] || { echo "flink-dist-$FLINK_VERSION.jar not found under $LIB" >&2; exit 1; }
