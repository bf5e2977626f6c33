// Package jstest runs the JavaScript SDK's tests (sdk/js, `node --test`) against the real
// maula-chat binary with the fake upstream, so the JS SDK is held to the same server as the
// Go SDK. It has no code of its own: see jstest_test.go.
package jstest
