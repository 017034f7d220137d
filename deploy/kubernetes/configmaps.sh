#!/bin/sh
# Creates (or updates) the two ConfigMaps the manifests mount, from this repository's files:
#   bridgestorm-locustfiles  locustfiles/*.py and locustfiles/shapes/*.py  -> /lotest/src/<file>
#   bridgestorm-scenarios    scenarios/*.conf                              -> /lotest/scenarios/<file>
# So a locustfile or a scenario conf can change without rebuilding the image (the users and the
# harness they import stay the image's). Run it again after editing one. Extra arguments go to
# kubectl (e.g. -n load-tests).
#
#   deploy/kubernetes/configmaps.sh -n load-tests
set -eu
cd "$(dirname "$0")/../.."

# --from-file=<dir> takes every regular file of the directory under its own name (keys are flat:
# locustfiles/shapes/burst.py becomes /lotest/src/burst.py); --dry-run + apply makes it an update.
kubectl create configmap bridgestorm-locustfiles "$@" \
  --from-file=locustfiles/ --from-file=locustfiles/shapes/ \
  --dry-run=client -o yaml | kubectl apply "$@" -f -
kubectl create configmap bridgestorm-scenarios "$@" \
  --from-file=scenarios/ \
  --dry-run=client -o yaml | kubectl apply "$@" -f -
