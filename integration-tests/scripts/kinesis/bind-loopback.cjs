// Preloaded into the kinesis-local (kinesis-mock) process with `node --require`.
//
// kinesis-mock hard-codes its listen address to 0.0.0.0 (all interfaces) and
// has no setting to change it; services started by memstate's scripts must
// listen on the loopback interface only. Every server in the process is a
// net.Server (tls.Server inherits from it), so forcing the host of
// net.Server#listen binds both the plain and the TLS port to loopback.
'use strict';

const net = require('net');

const host = process.env.MEMSTATE_BIND_HOST || '127.0.0.1';
const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function listenOnLoopback(...args) {
  const first = args[0];
  if (first !== null && typeof first === 'object' && !Array.isArray(first)) {
    // listen(options[, backlog][, callback]); a `path` (IPC socket) is left alone.
    if (first.path === undefined) {
      args[0] = Object.assign({}, first, { host });
    }
  } else if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback])
    if (typeof args[1] === 'string') {
      args[1] = host;
    } else {
      args.splice(1, 0, host);
    }
  }
  return listen.apply(this, args);
};
