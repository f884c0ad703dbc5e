"""The one test kit for everything that talks to Kubernetes, helm, docker and HTTP.

    tools.py    where things are: the repo, the kubeconfig, kubectl/helm (one lookup order)
    commands.py run (any command, output captured, CommandFailed with it), spawn (a helper
                process that dies with the test run, however it ends)
    wait.py     wait_for (one polling loop for every suite), kubectl table parsing
    kube.py     Kube: kubectl + helm against one cluster, port-forward
    http.py     JSON over HTTP, a free loopback port
    names.py    run pod names as the operator's builders make them
    trainings.py FederatedTrainings through the Python client: CRD, status, `fake_pod`,
                `healthrisk operator run` as a subprocess (the operator suite)
    images.py   the platform's images: built from the wheelhouse and loaded into the
                cluster when missing or stale, a no-op when current
    plugin.py   pytest fixtures (`kube`, `namespace`, `platform_images`, `prometheus_image`)
                and the line that tells how to reproduce a failure

tools, commands, wait, kube, http, images and plugin import only the standard library, pytest
and healthrisk.contracts (the platform's shared names, itself standard library only).
"""
