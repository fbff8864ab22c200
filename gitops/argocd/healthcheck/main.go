// Command healthcheck runs an Argo CD resource health script (health.lua) against the cases of its
// health_test.yaml, in the Lua runtime Argo CD itself uses (github.com/yuin/gopher-lua), with the
// libraries Argo CD opens for a health customization (package, base, table; no string, io or os).
//
//	healthcheck DIR   # DIR holds health.lua and health_test.yaml (Argo CD's resource_customizations layout)
//
// Exit 0 when every case returns the expected status and message, 1 when one does not, 2 when the
// script or the cases cannot be run at all. This is a test tool: the product is Python.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type testCase struct {
	HealthStatus healthStatus `json:"healthStatus"`
	InputPath    string       `json:"inputPath"`
}

type testFile struct {
	Tests []testCase `json:"tests"`
}

var validStatuses = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

// toLua turns a decoded JSON value into a Lua value the way Argo CD hands `obj` to a script: objects
// become tables keyed by string, arrays become sequences, every number a Lua number.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return lua.LNumber(i)
		}
		f, err := v.Float64()
		if err != nil || math.IsInf(f, 0) {
			return lua.LString(v.String())
		}
		return lua.LNumber(f)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func readObject(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	asJSON, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	decoder := json.NewDecoder(bytes.NewReader(asJSON))
	decoder.UseNumber()
	var obj map[string]any
	if err := decoder.Decode(&obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

func run(script string, obj map[string]any) (healthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return healthStatus{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second) // as Argo CD: a script gets one second
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return healthStatus{}, err
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return healthStatus{}, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	got := healthStatus{Status: lua.LVAsString(result.RawGetString("status")), Message: lua.LVAsString(result.RawGetString("message"))}
	if !validStatuses[got.Status] {
		return healthStatus{}, fmt.Errorf("the script returned the status %q, which Argo CD treats as Unknown", got.Status)
	}
	return got, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck DIR (holding health.lua and health_test.yaml)")
		os.Exit(2)
	}
	dir := os.Args[1]
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var cases testFile
	if err := yaml.UnmarshalStrict(raw, &cases); err != nil || len(cases.Tests) == 0 {
		fmt.Fprintf(os.Stderr, "health_test.yaml: no usable tests (%v)\n", err)
		os.Exit(2)
	}
	failed := 0
	for _, tc := range cases.Tests {
		obj, err := readObject(filepath.Join(dir, tc.InputPath))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		got, err := run(string(script), obj)
		if err != nil {
			fmt.Printf("ERROR %s: %v\n", tc.InputPath, err)
			failed++
			continue
		}
		if got != tc.HealthStatus {
			fmt.Printf("FAIL  %s: got %s %q, want %s %q\n", tc.InputPath, got.Status, got.Message, tc.HealthStatus.Status, tc.HealthStatus.Message)
			failed++
			continue
		}
		fmt.Printf("ok    %s: %s %q\n", tc.InputPath, got.Status, got.Message)
	}
	fmt.Printf("%d of %d cases as expected\n", len(cases.Tests)-failed, len(cases.Tests))
	if failed > 0 {
		os.Exit(1)
	}
}
