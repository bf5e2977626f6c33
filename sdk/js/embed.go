// Package jssdk embeds the JavaScript SDK's source so the server can serve the very file that
// third parties install from npm: the web pages import it from /assets/sdk/index.js.
package jssdk

import _ "embed"

// Source is src/index.js, the ES module of @maula/chat.
//
//go:embed src/index.js
var Source []byte
