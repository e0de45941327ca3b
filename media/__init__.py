"""trunkline.media: the RTP relay (packet engines, MediaRelay gRPC service, `trunkline media`).

Sessions in Redis (`trunkline media --redis URL --relay-id ID`)
----------------------------------------------------------------

A relay keeps each of its sessions in Redis so that the same relay, restarted (a crash, a container
restart in the same pod), re-creates them on the same ports before it serves gRPC, and the parties'
audio resumes without any signalling. Keys are namespaced by the relay id, which must be stable
across restarts and unique per relay (the pod name):

  trunkline:relay:<relay id>:session:<session id>   string, JSON (below), PX = the record's TTL
  trunkline:relay:<relay id>:sessions               sorted set: member session id, score: the unix
                                                    time its record expires (the restart reads this
                                                    instead of SCANning); PEXPIRE = the longest TTL

The record (version 1); addresses are [host, port] or null, keys base64 of key + salt (RFC 4568):

  {"v": 1, "session": "<session id: the edge's call key>", "timeout": <inactivity timeout, s; 0: none>,
   "legs": [<leg A>, <leg B>]}
  leg: {"rtp_port": 20000, "rtcp_port": 20001,      # the relay's pair (rtcp_port == rtp_port with mux)
        "relay_key": "<ours, in our SDP>" | null,
        "remote_rtp": [h, p], "remote_rtcp": [h, p], "rtcp_mux": false,   # from the party's SDP
        "party_key": "<the party's>" | null, "clock_rate": 8000, "want_srtp": false,
        "signalling_host": "<IP>" | null,                   # where the party's SIP came from
        "latched_rtp": [h, p] | null, "latched_rtcp": [h, p] | null}    # where it really sends from

Lifetime: written on CreateSession and UpdateSession; deleted on DeleteSession, at the inactivity
timeout, when the relay stops cleanly (it ends its sessions then) and when its engine died. TTL =
timeout (or 60 s without one) + 2 report intervals; the engines report every 5 s which sessions had
packets (and their latched addresses), and those records are written again, so a record outlives its
session and a dead relay's records go away by themselves.

Writes leave the gRPC call path at once (the service marks the session; one task writes what is
marked, up to 500 sessions per MULTI/EXEC round trip, each command bounded by a 250 ms timeout). With
Redis down, sessions are created and relayed as usual, the failure is logged once and the writes
retried every second. At start the relay reads the index (3 s at most; if Redis does not answer it
serves without and restores when Redis answers), binds each record's pair again (waiting up to 2 s
for the dead run's engines to let go) and restores latched addresses as confirmed (a stranger cannot
latch in the gap) and our SRTP keys; a record whose ports cannot be had is logged and deleted.

Limits: libsrtp's rollover counters and SRTCP indexes start again at 0 after a restore, so on an SRTP
leg whose 16-bit RTP sequence number has wrapped since the call began (at most ~22 minutes at 50
packets/s) neither side authenticates the other's packets any more, and a party checking SRTCP replay
drops our RTCP for a while. Counters (packets, loss, jitter) start again from zero.
"""
