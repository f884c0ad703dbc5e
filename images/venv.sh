#!/bin/sh
# venv.sh IMAGE: in the images' one dependency stage, make IMAGE's virtualenv from the
# wheelhouse (requirements-IMAGE.txt, third-party wheels only), slimmed, and leave it in
# /opt/venvs/IMAGE. It is made at the path it has in the image, so the #! lines of its
# scripts hold there.
set -eu
image=$1
case $image in
  mlflow) home=/opt/mlflow ;;
  *) home=/opt/health-risk ;;
esac
python3 -m venv --without-pip "$home"
python3 -m pip --python "$home/bin/python" install --quiet --no-index --no-deps --no-cache-dir --no-compile \
  --find-links /wheelhouse -r "/wheelhouse/requirements-$image.txt"
site="$(echo "$home"/lib/python3*/site-packages)"

# The packages' own test suites, C headers and Cython sources are never used at run time.
for pkg in numpy scipy pandas sklearn statsmodels pyarrow; do
  [ -d "$site/$pkg" ] && find "$site/$pkg" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +
done
find "$site" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' -o -name '*.c' -o -name '*.cpp' \) -delete
# What an image never imports at run time (checked by tracing sys.modules and the mapped
# libraries of the real processes), though its dependencies declare it:
uninstall() { python3 -m pip --python "$home/bin/python" uninstall --quiet --yes "$@"; }
case $image in
  operator)
    # kopf and the synchronous client talk to the API; kubernetes.aio, a second (asyncio)
    # copy of the client, is never imported
    rm -rf "$site/kubernetes/aio" ;;
  flower)
    # uv (37 MB) installs a Flower App's own dependencies at run time, which every
    # SuperLink and SuperNode here runs with --disable-runtime-dependency-installation.
    # pyarrow's Flight RPC is never loaded (parquet, csv, compute and datasets are).
    uninstall uv
    rm -rf "$site"/pyarrow/libarrow_flight.so* "$site"/pyarrow/_flight.*.so ;;
  drift)
    # Evidently declares its UI (uvicorn's uvloop), demo data (Faker), statsmodels and
    # plotly's JupyterLab extension; a drift check imports none of them. Nor pyarrow's
    # Flight RPC, as in Flower's image.
    uninstall Faker statsmodels uvloop
    rm -rf "$site/jupyterlab_plotly" "$home/share/jupyter" \
      "$site"/pyarrow/libarrow_flight.so* "$site"/pyarrow/_flight.*.so ;;
esac

# Bytecode only for third-party code: imports as fast as with sources on a read-only root
# filesystem (nothing to compile at start), about half the bytes. Kept as sources (with
# their bytecode beside): Evidently and Flower (small; their tracebacks are the ones worth
# reading) and MLflow's database migrations, the registry's and its auth app's user
# database's (alembic finds them as .py files).
keep='/(evidently|flwr|db_migrations|auth/db/migrations)/'
python3 -m compileall -q -b -j 0 -x "$keep" "$site" >/dev/null
find "$site" -name '*.py' -regextype posix-extended ! -regex ".*$keep.*" -delete
python3 -m compileall -q -j 0 "$site" >/dev/null
mkdir -p /opt/venvs
mv "$home" "/opt/venvs/$image"
