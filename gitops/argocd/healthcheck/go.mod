// The Argo CD health-check runner used by the tests: gopher-lua, the Lua runtime Argo CD runs
// health.lua in. Built and cached by tests/integration/test_argocd_health.py.
module aicert.dev/argocd-healthcheck

go 1.26.0

require (
	github.com/yuin/gopher-lua v1.1.2
	sigs.k8s.io/yaml v1.6.0
)

require go.yaml.in/yaml/v2 v2.4.2 // indirect
