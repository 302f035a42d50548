/*
 * transfer.pml: a Promela model of kvferry's transfer protocol between a prefill node P (the
 * sender of the bytes) and a decode node D (the receiver), checked exhaustively by verify.sh.
 *
 * Processes, and the code each stands for:
 *
 *   the book     actors/offer_book.cpp: a send() is an offer in P's book (in_book), no actor,
 *                until a fetch fits it; whoever takes it out owns it: the sender (hand_over: a
 *                new SendReq, the fetch relayed to it in a later step, so a cancel can come
 *                first; or the sweep at its deadline), node::cancel, or stop() (book_end: ends
 *                it there, released: nothing was exposed).
 *   SendReq(i)   actors/send_request_actor.cpp, spawned by the sender at the hand-over. `phase`
 *                is the actor's behaviour:
 *                waiting_for_peer -> transferring -> s_stopping (behaviour `stopping`) -> s_end
 *                (the actor quit). lease_w / copy_w / puts_w are its outstanding steps
 *                (lease_wait, copy_wait, puts_wait); staged, `filling` is the slot being
 *                gathered (or gathered, waiting for the puts before it), `sending` the slot
 *                whose puts are posted: chunk n+1 is leased and gathered while chunk n is put,
 *                so at most one copy and one batch of puts are outstanding at once (pump).
 *   RecvReq(i)   actors/recv_request_actor.cpp: queued -> fetching -> r_stopping -> r_end.
 *   Sender       actors/sender_actor.cpp: owners (the send-requests it spawned, erased on their
 *                DOWN), parked fetches (park expiry; served at the offer's announce), routing of
 *                fetch / cancel_fetch to the owner or the book, the sweep of offers' deadlines.
 *   Transport    actors/transport_actor.cpp: put / copy posted to the engine, cancel, op_done ->
 *                the requester's answer (only for an op it still knows). Ops are keyed by
 *                (token, kind): one batch of puts and one copy per token; an op is OPI(i, k).
 *   Engine       transport::engine and the copy engine: completes each posted op exactly once,
 *                OK or not, at any time, also after a cancel (the completion contract).
 *   App          the serving engines: node::cancel on either side, at any point (send() and
 *                receive() are in init: the offer and its announce, the recv-request).
 *   Faults       peer death: P or D is killed at any point (its actors stop, the other node's
 *                watches of its actors fire DOWN).
 *   StopP/StopD  node::stop() (actors/node.cpp): accepting = false, the book closed (its offers
 *                end stopped, released), exit to every owner, the
 *                supervisor exits (transport, sender / anchor terminate), await all actors,
 *                destroy the engine, release every request still unreleased.
 *   Final        at global quiescence (spin's `timeout`): every handle is settled.
 *
 * request_owner (actors/request_lifecycle.{hpp,cpp}) is s_finish/s_release and r_finish/
 * r_release: finish() resolves the handle once (its terminal_ guard), release() releases it once,
 * ~request_owner quarantines what was not released (s_quar/r_quar). The handle (handle_state) is
 * s_res/s_rel, r_res/r_rel: how many times it was resolved / released.
 *
 * Asynchrony: each actor has a FIFO mailbox (a channel). A handler is one atomic step (an actor
 * handles one message at a time); actors only talk through mailboxes, so a cancel can cross a
 * completion, an answer or a DOWN already on its way. A message to an actor that has quit is
 * handled when sent, as CAF does: a request (fetch, put, copy) is bounced with CAF's
 * sec::request_receiver_down, anything else is dropped; what is still in the mailbox when the
 * actor quits is handled the same way then. CAF 0.17 has no broken_promise: a response promise
 * that is never delivered (parked fetch of a dead sender, fetch_rp of an owner that quit without
 * answering) yields no answer at all.
 * The deadline (arm_deadline: a response timeout handled by the current behaviour) fires once,
 * at any point while the actor lives; where it can change nothing any more it is left out.
 * Watches (watch_index) and monitors: the watched actor's termination enqueues a DOWN into each
 * watcher's mailbox; the down handler ignores it if the watch was dropped meanwhile; a watch on
 * an actor already dead yields a DOWN at once.
 *
 * Abstracted away: bytes, plans and validation (a fetch is valid, or with ALLOW_INVALID may be
 * refused by the sender while the offer waits on in the book), the sender's fetch checks and parking limits (a refusal is
 * a kvferry error, like a park expiry), the UCX puts of one batch (one batch, one completion:
 * what the engine guarantees), layers (one layer), epochs and stale fetches (one incarnation per
 * node), bound offers, decline(), layout tags, the receiver's admission queue (a held request
 * like the book's offers; `queued` stands for it and the recv-request's first step) and the
 * worker-address read (part of the admission step out of `queued`, or its failure once D's
 * engine is gone, which stop() destroys after the children), the staging pool (a lease is granted or refused at any time, in any phase; slots are
 * per request; returning / poisoning is checked, pool internals are not),
 * supervisor restarts (no child crashes: the transport terminates only in stop()), exceptions in
 * handlers, duplicate ids, timings and health counters.
 *
 * Ghost state, per op OPI(i, k) of request i, kind k (KC the copy: it reads the source into a
 * slot; KP the puts: they read the source, or a slot, and write D's destination): ops_out (handed
 * to the transport, its completion has not run), posted (the engine holds it), op_slot (the slot
 * it writes or reads: slots are named by their chunk, 1..CHUNKS). Per request: slot_ret (the
 * slots given back to the pool), ok_batches (put batches completed OK).
 *
 * Properties (see verify.sh):
 *  P1 every handle resolves exactly once: assert in handle_resolve (no second resolve), Final
 *     (none left unresolved); ltl p1_resolve_once, ltl p1_settles.
 *  P2 memory is released only after quiescence is proven: assert in handle_release (no op of the
 *     request outstanding, copy or puts, unless that memory's engine is gone), at a staging
 *     slot's return (no op that writes or reads that slot outstanding), and in the transport:
 *     nothing is posted that reads or writes memory already released (source, destination,
 *     slot).
 *  P3 no deadlock: no invalid end state. `end` labels only where waiting forever is legitimate:
 *     the long-lived actors' loops, the engine's idle loop, the App.
 *  P4 after stop() every handle of that node is resolved and released: assert in StopP/StopD;
 *     ltl p4_stop.
 *  Also: a decode that succeeds had every put batch completed OK, and its send succeeded too; a
 *  request has at most one copy and one batch of puts outstanding (assert at the post and in
 *  the transport); puts read a slot only once the copy into it completed; no slot is dropped.
 */

/* ---- instance bounds (spin -D...) ---------------------------------------------------------- */
#ifndef NREQ
#define NREQ 1            /* requests, each one send on P and one receive on D: 1 or 2 */
#endif
#ifndef STAGED
#define STAGED 0          /* 1: stage_through_pool (per chunk: lease, copy, puts; pipelined) */
#endif
#ifndef CHUNKS
#define CHUNKS 2          /* staged: chunks, i.e. put batches, per send */
#endif
#ifndef ALLOW_KILL
#define ALLOW_KILL 1      /* peer death: P or D may be killed */
#endif
#ifndef ALLOW_STOP_P
#define ALLOW_STOP_P 1    /* node::stop() on P */
#endif
#ifndef ALLOW_STOP_D
#define ALLOW_STOP_D 1    /* node::stop() on D */
#endif
#ifndef ALLOW_CANCEL_S
#define ALLOW_CANCEL_S 1  /* node::cancel of the send */
#endif
#ifndef ALLOW_CANCEL_R
#define ALLOW_CANCEL_R 1  /* node::cancel of the receive */
#endif
#ifndef ALLOW_TRANSPORT_CRASH
#define ALLOW_TRANSPORT_CRASH 0  /* not a stated scenario (see README): P's transport crashes */
#endif
#ifndef ALLOW_DEADLINE
#define ALLOW_DEADLINE 1  /* deadlines fire at any point (1), or only when nothing else can
                             move (2: long deadlines, to keep two requests tractable) */
#endif
#ifndef ALLOW_INVALID
#define ALLOW_INVALID 0   /* a fetch the send-request refuses (plan_puts error) */
#endif

#define MAXR 2
#if STAGED
#define NBATCH CHUNKS
#else
#define NBATCH 1
#endif

/* results: what the handle resolves to. Only "succeeded or not" matters to the properties, so
   every failure (and a cancel) is one value: the names say which path produced it. */
#define R_NONE        0
#define R_OK          1
#define R_FAILED      2
#define R_CANCELLED   R_FAILED
#define R_TIMED_OUT   R_FAILED
#define R_PEER_FAILED R_FAILED
#define R_STOPPED     R_FAILED
#define R_BACKEND     R_FAILED   /* backend_unhealthy: the transport terminated */
#define R_ERROR       R_FAILED   /* an engine, pool or validation error */

/* what a send-request waits for (send_request_actor.cpp: enum class step); the copy and the
   puts are operations at the transport, named by (request, kind): OPI(j, k) */
#define KC 0      /* the copy: gathers a chunk from the source into its staging slot */
#define KP 1      /* the batch of puts: reads the source, or the slot, writes D's destination */
#define KL 2      /* the lease of a staging slot (the pool's answer; no operation) */
#define OPI(j, k) (2 * (j) + (k))

mtype = {
  /* to the sender (P) */       ANNOUNCE, FETCH, CANCEL_FETCH, DOWN_OWNER,
  /* to a send-request (P) */   CANCEL, STEP_OK, STEP_ERR, DOWN_FETCHER, DOWN_TRANSPORT,
  /* to the transport (P) */    PUT, COPY, OP_OK, OP_ERR,
  /* to a recv-request (D) */   ANS_OK, ANS_KVERR, ANS_CAFERR, ANS_BOUNCED, DOWN_PEER
};
/* the request actors' behaviours (phases) */
mtype = { waiting_for_peer, transferring, s_stopping, s_end };   /* send-request */
mtype = { queued, fetching, r_stopping, r_end };                 /* recv-request */

/* ---- mailboxes ----------------------------------------------------------------------------- */
chan s_mb[MAXR] = [8] of { mtype, byte };        /* send-request i; byte: a step's kind */
chan r_mb[MAXR] = [4] of { mtype, byte };        /* recv-request i; byte: an error's result */
chan snd_mb = [4 * MAXR] of { mtype, byte };     /* sender; byte: request id */
chan tr_mb = [4 * MAXR] of { mtype, byte };      /* transport; byte: the op, OPI(token, kind) */

/* bounded so that a send never blocks: checked */
#define SEND(ch, a, b) assert(nfull(ch)); ch!a,b

/* ---- nodes ---------------------------------------------------------------------------------- */
bool p_dead, d_dead;          /* killed */
bool p_stopping, d_stopping;  /* stop() called: accepting = false, exit sent to every owner */
bool snd_dead, tr_dead;       /* P's sender / transport terminated */
bool d_anchor_dead;           /* D's health supervisor (the anchor P watches) terminated */
bool d_children_dead;         /* D's receiver and transport terminated */
bool p_engine_gone;           /* P's engine destroyed: every op completed, none will run */
bool d_revoked;               /* D's engine destroyed: its registrations (rkeys) are gone */
bool p_stopped, d_stopped;    /* stop() returned */

/* ---- requests ------------------------------------------------------------------------------- */
bool s_spawned[MAXR], r_spawned[MAXR];   /* send() / receive() spawned the owner */
bool s_ended[MAXR], r_ended[MAXR];       /* the owner quit */
byte s_res[MAXR], s_rel[MAXR];           /* send handle: times resolved / released */
byte r_res[MAXR], r_rel[MAXR];           /* receive handle */
byte s_stat[MAXR], r_stat[MAXR];         /* the terminal result */
bool s_quar[MAXR], r_quar[MAXR];         /* ended unreleased: quarantined by the registry */
bool s_retired[MAXR];                    /* the send's token retired in the op ledger */
bool s_wf[MAXR], s_wt[MAXR];             /* send-request watches the fetcher's anchor / transport */
bool r_wp[MAXR];                         /* recv-request watches the remote sender */
bool s_dl[MAXR], r_dl[MAXR];             /* the request's deadline fired (it fires once) */
bool ops_out[2 * MAXR], posted[2 * MAXR], tr_known[2 * MAXR];  /* per op OPI(j, k): ghost */
byte op_slot[2 * MAXR];                  /* the staging slot it writes (copy) or reads (puts) */
byte slot_ret[MAXR];                     /* bit s: the request's slot s went back to the pool */
byte ok_batches[MAXR];                   /* put batches completed without error */
bool owners[MAXR], parked[MAXR];         /* sender state */
bool in_book[MAXR];                      /* the send is an offer in P's offer book (no actor) */
bool relay[MAXR];                        /* the sender spawned its owner, the fetch not relayed yet */

#define SRC_QUIESCENT(j) ((!ops_out[OPI(j, KC)] && !ops_out[OPI(j, KP)]) || p_engine_gone)
#define DST_QUIESCENT(j) (!ops_out[OPI(j, KP)] || d_revoked)

/* ---- delivery (see the header: messages to an actor that quit) ----------------------------- */
inline to_rreq(j, msg, arg) {
  if
  :: r_ended[j] || d_dead -> skip
  :: else -> SEND(r_mb[j], msg, arg)
  fi
}
inline to_sreq(j, msg, arg) {
  if
  :: p_dead -> skip
  :: !p_dead && s_ended[j] ->
     if
     :: msg == FETCH -> to_rreq(j, ANS_BOUNCED, 0)  /* delegated to an owner that quit */
     :: else -> skip
     fi
  :: else -> SEND(s_mb[j], msg, arg)
  fi
}
inline to_sender(msg, j) {
  if
  :: snd_dead ->
     if
     :: msg == FETCH -> to_rreq(j, ANS_BOUNCED, 0)
     :: else -> skip
     fi
  :: else -> SEND(snd_mb, msg, j)
  fi
}
inline to_transport(msg, o) {         /* o: the op, OPI(request, kind) */
  if
  :: tr_dead ->
     if
     :: msg == PUT || msg == COPY ->       /* never posted: request_receiver_down */
        ops_out[o] = false; op_slot[o] = 0; to_sreq((o) / 2, STEP_ERR, (o) % 2)
     :: else -> skip
     fi
  :: else -> SEND(tr_mb, msg, o)
  fi
}

/* ---- the handle (handle_state) and request_owner ------------------------------------------ */
inline handle_resolve(res, stat, r) {   /* handle_state::resolve: a second call is a violation */
  assert(res == 0);
  res = 1;
  stat = r
}
inline handle_release(res, rel) {       /* handle_state::release: once, after the result */
  assert(res == 1);
  assert(rel == 0);
  rel = 1
}

#ifdef MUTANT_RESOLVE_TWICE
#define NOT_TERMINAL(res) true          /* mutant: request_owner::finish without terminal_ */
#else
#define NOT_TERMINAL(res) (res == 0)
#endif

inline s_finish(r) {
  if
  :: NOT_TERMINAL(s_res[i]) -> handle_resolve(s_res[i], s_stat[i], r)
  :: else -> skip
  fi
}
inline s_release() {
  if
  :: s_rel[i] == 0 ->
     assert(SRC_QUIESCENT(i));          /* P2: no copy or put can still touch the source */
     handle_release(s_res[i], s_rel[i])
  :: else -> skip
  fi
}
inline r_finish(r) {
  if
  :: NOT_TERMINAL(r_res[i]) -> handle_resolve(r_res[i], r_stat[i], r)
  :: else -> skip
  fi
}
inline r_release() {
  if
  :: r_rel[i] == 0 ->
     assert(DST_QUIESCENT(i));          /* P2: no put can still write the destination */
     handle_release(r_res[i], r_rel[i])
  :: else -> skip
  fi
}

/* ==== send-request actor (P) ================================================================ */

/* A handler that ends the request records how (end_send / finish_transfer below); the ending
   itself, the same for every handler, runs once at the end of the handler (send_ending), in the
   same atomic step. */
inline end_send(r, q) {               /* end_send(self, r, quiescent): a fetch taken and not */
  ending = true; er = r; eq = q;      /* answered yet hears why (fetch_rp.pending()) */
  answer = (phase == transferring || phase == s_stopping)
}
inline finish_transfer(r) {           /* finish_transfer: the fetcher hears r, ends released */
  ending = true; er = r; eq = true; answer = true
}

/* give_back, to the pool: P2, no copy still writes the slot and no put still reads it. A slot
   is named by its chunk (1..CHUNKS; a lease answered in stopping holds the next chunk's slot,
   never cut). */
inline slot_back(s) {
  assert(!(ops_out[OPI(i, KC)] && op_slot[OPI(i, KC)] == (s)));
  assert(!(ops_out[OPI(i, KP)] && op_slot[OPI(i, KP)] == (s)));
  slot_ret[i] = slot_ret[i] | (1 << (s))
}

/* end_send: a slot is poisoned (out of service for good) when the end is not quiescent and its
   own operation is outstanding: the copy for `filling`, the puts for `sending` */
#ifdef MUTANT_SLOT_BACK_EARLY
#define FILLING_IN_USE puts_w   /* mutant: each slot judged by the other slot's operation */
#define SENDING_IN_USE copy_w
#else
#define FILLING_IN_USE copy_w
#define SENDING_IN_USE puts_w
#endif

/* engines_idle: nothing of the request in the copy engine or in UCX (a lease wait exposes
   nothing); quiescent_now is the same */
#ifdef MUTANT_IDLE_IGNORES_COPY
#define ENGINES_IDLE (!puts_w)              /* mutant: a copy in flight is forgotten */
#else
#define ENGINES_IDLE (!copy_w && !puts_w)
#endif

/* finish_transfer's delivery (fetch_rp.deliver), then end_send + request_base::end: each slot
   back or poisoned; terminal once; released if quiescent, else quarantined (~request_owner);
   watches off; the actor quits: the sender's monitor fires, what is left in the mailbox is
   bounced or dropped. */
inline send_ending() {
  if
  :: ending ->
     if
     :: answer && er == R_OK ->
        assert(ok_batches[i] == NBATCH);  /* succeeds only with every put batch completed OK */
        to_rreq(i, ANS_OK, 0)
     :: answer && er != R_OK && eq -> to_rreq(i, ANS_KVERR, er)
     :: answer && er != R_OK && !eq ->
        to_rreq(i, ANS_CAFERR, 0)       /* puts may still land: CAF's error, D quarantines */
     :: else -> skip
     fi;
     if
     :: filling != 0 && (eq || !FILLING_IN_USE) -> slot_back(filling)
     :: else -> skip                    /* none, or poisoned */
     fi;
     if
     :: sending != 0 && (eq || !SENDING_IN_USE) -> slot_back(sending)
     :: else -> skip
     fi;
     s_finish(er);
     if
     :: eq -> s_release()
     :: else -> s_quar[i] = true; s_retired[i] = true   /* retired: nothing of it starts now */
     fi;
     s_wf[i] = false; s_wt[i] = false;
     s_ended[i] = true;
     phase = s_end;
     to_sender(DOWN_OWNER, i);
     do
     :: nempty(s_mb[i]) -> s_mb[i]?m,a;
        if
        :: m == FETCH -> to_rreq(i, ANS_BOUNCED, 0)
        :: else -> skip
        fi
     :: empty(s_mb[i]) -> break
     od;
     lease_w = false; copy_w = false; puts_w = false; filling = 0; sending = 0; chunk = 0;
     sent_all = false; stop_reason = R_NONE; s_dl[i] = false;  /* the timer dies too */
     ending = false; er = R_NONE; eq = false; answer = false
  :: else -> skip
  fi;
  m = 0; a = 0
}

/* post_puts / post_copy of slot s (0: puts straight from the source): a request to the
   transport, which is watched while it holds a copy or puts (watch_transport) */
inline post_step(k, s) {
  assert(!ops_out[OPI(i, k)]);          /* at most one copy and one batch of puts per request */
  ops_out[OPI(i, k)] = true; op_slot[OPI(i, k)] = s;
  if
  :: k == KC -> copy_w = true
  :: else -> puts_w = true
  fi;
  if
  :: !s_wt[i] && tr_dead -> SEND(s_mb[i], DOWN_TRANSPORT, 0)   /* a dead actor: DOWN at once */
  :: else -> skip
  fi;
  s_wt[i] = true;
  if
  :: k == KP -> to_transport(PUT, OPI(i, k))
  :: else -> to_transport(COPY, OPI(i, k))
  fi
}

/* answer: the answer of the copy (KC) or the puts (KP) is recorded; the transport stays watched
   while the other is outstanding */
inline answered(k) {
  if
  :: k == KC -> copy_w = false
  :: else -> puts_w = false
  fi;
  s_wt[i] = (copy_w || puts_w)
}

/* pump, staged and transferring: the chunk gathered goes out once the puts before it completed,
   the next chunk is leased once no chunk is being gathered, the transfer is done once every
   chunk's puts completed (layer_landed, next_layer: one layer) */
inline pump() {
  if
  :: filling != 0 && !copy_w && !puts_w ->
     assert(sending == 0);              /* no slot is dropped */
     sending = filling; filling = 0; post_step(KP, sending)
  :: else -> skip
  fi;
  if
  :: filling == 0 && !lease_w && chunk < CHUNKS -> lease_w = true   /* lease_slot */
  :: else -> skip
  fi;
  if
  :: ENGINES_IDLE && !lease_w && filling == 0 && chunk == CHUNKS -> finish_transfer(R_OK)
  :: else -> skip
  fi
}

/* stop(): nothing in the engines: the end, now; else the answers end the request (stopping) */
inline do_stop(reason) {
  stop_reason = reason;
  if
  :: ENGINES_IDLE -> finish_transfer(stop_reason)   /* a lease wait exposes nothing */
  :: else ->
     /* puts outstanding: cancel to the transport (ucp_request_cancel); the engine completes
        the batch exactly once whatever it is told, so the message changes nothing in the
        model: not sent. A copy runs out on its own. */
#ifdef MUTANT_RELEASE_EARLY
     finish_transfer(stop_reason)       /* mutant: released before the transport's answer */
#else
     phase = s_stopping
#endif
  fi
}

/* stopping_step: an answer (k: KC, KP, KL) recorded, ok or not; the last chunk's puts
   completing OK mean everything was sent (sent_all); once neither a copy nor puts are
   outstanding the request ends */
inline stopping_step(k, ok) {
  if
  :: (ok) && (k) == KP && (!STAGED || (chunk == CHUNKS && filling == 0)) -> sent_all = true
  :: else -> skip
  fi;
  if
  :: ENGINES_IDLE && sent_all && s_res[i] == 0 ->
     finish_transfer(R_OK)              /* the last puts won the race: succeeded */
  :: ENGINES_IDLE && !(sent_all && s_res[i] == 0) -> finish_transfer(stop_reason)
  :: else -> skip
  fi
}

/* the fetching node's anchor is DOWN (down handler, last branch) */
inline fetcher_down() {
  s_wf[i] = false;
  s_finish(R_PEER_FAILED);
  /* forget_peer to the transport (its puts complete with an error): no effect here, not sent */
  if
  :: stop_reason == R_NONE -> do_stop(R_PEER_FAILED)
  :: else -> skip
  fi
}

#define DEADLINE_ARMED(j) (ALLOW_DEADLINE == 1 || (ALLOW_DEADLINE == 2 && timeout))
#define S_LIVE (phase != s_end && !p_dead)

proctype SendReq(byte i) {
  mtype phase = waiting_for_peer;
  mtype m;
  byte a;
  bool lease_w = false;     /* outstanding steps: lease_wait, */
  bool copy_w = false;      /*   copy_wait, */
  bool puts_w = false;      /*   puts_wait */
  byte filling = 0;         /* staged: the slot being gathered, or gathered and waiting (0: none) */
  byte sending = 0;         /* staged: the slot whose puts are posted (0: none) */
  byte chunk = 0;           /* staged: chunks cut from the plan so far (next_op) */
  bool sent_all = false;    /* stopping: the last chunk's puts completed OK */
  byte stop_reason = R_NONE;
  bool ending = false;      /* this handler ends the request: */
  byte er = R_NONE;         /*   with this result, */
  bool eq = false;          /*   released (quiescent) or not, */
  bool answer = false;      /*   after answering the fetcher (finish_transfer) */

  do
  :: atomic { S_LIVE && (len(s_mb[i]) > 0 || lease_w || p_stopping ||
                         (DEADLINE_ARMED(i) && !s_dl[i] && !(phase == s_stopping && s_res[i] != 0))) ->
     if
     /* ---- a message ---------------------------------------------------------------------- */
     :: nempty(s_mb[i]) -> s_mb[i]?m,a;
        if
        /* -- waiting_for_peer ----------------------------------------------------------- */
        :: phase == waiting_for_peer ->
           if
           :: m == FETCH ->         /* on_fetch: the sender matched it with the offer */
              s_wf[i] = true;                             /* watch the decode node's anchor */
              if
              :: d_anchor_dead -> SEND(s_mb[i], DOWN_FETCHER, 0)
              :: else -> skip
              fi;
              phase = transferring;                       /* enter_transferring, next_layer */
              if
              :: STAGED -> pump()                         /* lease_slot */
              :: else -> post_step(KP, 0)                 /* post_puts */
              fi
           :: m == CANCEL -> end_send(R_CANCELLED, true)  /* cancelled_before_advertise */
           :: else -> skip       /* cancel_fetch: nothing to cancel yet; nothing is watched */
           fi
        /* -- transferring ---------------------------------------------------------------- */
        :: phase == transferring ->
           if
           :: m == CANCEL || m == CANCEL_FETCH -> do_stop(R_CANCELLED)
           :: m == STEP_OK || m == STEP_ERR ->            /* transferring_step (a: the kind) */
              answered(a);
              if
              :: m == STEP_ERR -> do_stop(R_ERROR)        /* its error is what the fetcher hears */
              :: m == STEP_OK && !STAGED -> finish_transfer(R_OK)   /* advance: landed */
              :: m == STEP_OK && STAGED && a == KP ->     /* advance: the chunk's slot back */
                 slot_back(sending); sending = 0; pump()
              :: m == STEP_OK && STAGED && a == KC -> pump()   /* advance: gathered */
              fi
           :: m == DOWN_FETCHER && s_wf[i] -> fetcher_down()
           :: m == DOWN_TRANSPORT && s_wt[i] ->
              end_send(R_BACKEND, false)     /* quiescence unknown: quarantined (F9) */
           :: else -> skip
           fi
        /* -- stopping -------------------------------------------------------------------- */
        :: phase == s_stopping ->
           if
           :: m == STEP_OK || m == STEP_ERR -> answered(a); stopping_step(a, m == STEP_OK)
           :: m == DOWN_FETCHER && s_wf[i] -> fetcher_down()
           :: m == DOWN_TRANSPORT && s_wt[i] -> end_send(R_BACKEND, false)
           :: else -> skip       /* cancel, cancel_fetch: already stopping */
           fi
        fi
     /* ---- the deadline, handled by the current behaviour ---------------------------------- */
     :: DEADLINE_ARMED(i) && !s_dl[i] && !(phase == s_stopping && s_res[i] != 0) ->
        s_dl[i] = true;
        if
        :: phase == waiting_for_peer -> end_send(R_TIMED_OUT, true)   /* nothing exposed */
        :: phase == transferring -> s_finish(R_TIMED_OUT); do_stop(R_TIMED_OUT)
        :: phase == s_stopping -> s_finish(R_TIMED_OUT); stop_reason = R_TIMED_OUT
        fi
     /* ---- the exit handler: the node is stopping ------------------------------------------ */
     :: p_stopping -> end_send(R_STOPPED, false)
     /* ---- staged: the pool answers the lease (lease_slot), in any phase ------------------- */
     :: lease_w ->                         /* granted: held as `filling` whatever the phase */
        lease_w = false; filling = chunk + 1;
        if
        :: phase == transferring ->        /* advance: the next chunk cut, its copy posted */
           chunk++; post_step(KC, filling); pump()
        :: else -> stopping_step(KL, true)
        fi
     :: lease_w ->                         /* refused, or the wait timed out */
        lease_w = false;
        if
        :: phase == transferring -> do_stop(R_ERROR)
        :: else -> stopping_step(KL, false)
        fi
     fi;
     send_ending() }
  :: !S_LIVE -> break
  od
}

/* ==== recv-request actor (D) ================================================================ */

inline end_recv(r, q) {
  r_finish(r);
  if
  :: q -> r_release()
  :: else -> r_quar[i] = true
  fi;
  r_wp[i] = false;
  r_ended[i] = true;
  phase = r_end;
  do
  :: nempty(r_mb[i]) -> r_mb[i]?m,a
  :: empty(r_mb[i]) -> break
  od;
  r_dl[i] = false   /* the timer dies with the actor */
}

#define R_LIVE (phase != r_end && !d_dead)

proctype RecvReq(byte i) {
  mtype phase = queued;
  mtype m;
  byte a;

  r_spawned[i];
  do
  :: atomic { R_LIVE && nempty(r_mb[i]) -> r_mb[i]?m,a;
     if
     :: m == CANCEL ->
        if
        :: phase == queued -> end_recv(R_CANCELLED, true)   /* cancelled_before_advertise */
        :: phase == fetching -> to_sender(CANCEL_FETCH, i); phase = r_stopping
        :: phase == r_stopping -> skip
        fi
     :: m == ANS_OK ->                                      /* on_answer: transfer_done */
        assert(ok_batches[i] == NBATCH && s_stat[i] == R_OK);
        end_recv(R_OK, true)
     :: m == ANS_KVERR -> end_recv(a, true)     /* a kvferry error: sent after the puts stopped */
     :: m == ANS_CAFERR -> end_recv(R_PEER_FAILED, false)  /* CAF's own error: proves nothing */
     :: m == ANS_BOUNCED ->        /* request_receiver_down: the fetch was never taken: no put */
        end_recv(R_PEER_FAILED, true)
     :: m == DOWN_PEER && r_wp[i] ->
#if defined(MUTANT_IGNORE_PEER_DOWN)
        skip                                    /* mutant: the down handler ignores the peer */
#elif defined(MUTANT_RECV_RELEASE_ON_DOWN)
        end_recv(R_PEER_FAILED, true)           /* mutant: a vanished peer taken as proof */
#else
        end_recv(R_PEER_FAILED, false)          /* the prefill node went away: quarantined */
#endif
     :: else -> skip
     fi;
     m = 0; a = 0 }
  :: atomic { R_LIVE && DEADLINE_ARMED(i) && !r_dl[i] && !(phase == r_stopping && r_res[i] != 0) ->
     r_dl[i] = true;
     if
     :: phase == queued -> end_recv(R_TIMED_OUT, true)
     :: phase == fetching -> r_finish(R_TIMED_OUT); to_sender(CANCEL_FETCH, i); phase = r_stopping
     :: phase == r_stopping -> r_finish(R_TIMED_OUT)
     fi }
  :: atomic { R_LIVE && d_stopping -> end_recv(R_STOPPED, false) }   /* the exit handler */
  /* queued: admitted; window opened, the engine's worker address read: send_fetch */
  :: atomic { R_LIVE && phase == queued ->
     r_wp[i] = true;                            /* watch the remote sender */
     if
     :: snd_dead -> SEND(r_mb[i], DOWN_PEER, 0)
     :: else -> skip
     fi;
     to_sender(FETCH, i);
     phase = fetching }
  /* queued: D's engine is gone and gives no address (start_fetch's failure) */
  :: atomic { R_LIVE && phase == queued && d_children_dead -> end_recv(R_BACKEND, true) }
  :: !R_LIVE -> break
  od
}

/* ==== the offer book and the sender actor (P) =============================================== */

/* end_offer: an offer taken out of the book ends there, terminal once and released (nothing of
   it was exposed); it never had an actor */
inline book_end(j, r) {
  in_book[j] = false;
  handle_resolve(s_res[j], s_stat[j], r);
  assert(SRC_QUIESCENT(j));
  handle_release(s_res[j], s_rel[j]);
  s_ended[j] = true
}

/* serve_from_book: a fetch that does not fit is refused and the offer waits on; one that fits
   takes the offer out, its owner moves into a new send-request (registered: cancel() finds it
   from now on), and the fetch is relayed to it */
inline hand_over(j) {
  if
  :: ALLOW_INVALID -> to_rreq(j, ANS_KVERR, R_ERROR)
  :: true -> in_book[j] = false; owners[j] = true; relay[j] = true; run SendReq(j)
  fi
}

proctype Sender() {
  mtype m;
  byte a;
end_loop:
  do
  :: atomic { nempty(snd_mb) -> snd_mb?m,a;
     if
     :: m == ANNOUNCE ->                  /* send() put the offer into the book */
        if
        :: parked[a] && owners[a] -> parked[a] = false; to_sreq(a, FETCH, 0)
        :: parked[a] && !owners[a] && in_book[a] -> parked[a] = false; hand_over(a)
        :: else -> skip
        fi
     :: m == FETCH ->
        if
        :: owners[a] -> to_sreq(a, FETCH, 0)           /* relayed to the owner */
        :: !owners[a] && in_book[a] -> hand_over(a)   /* serve_from_book */
        :: else -> parked[a] = true                 /* send() not called yet (or over) */
        fi
     :: m == CANCEL_FETCH ->
        if
        :: owners[a] -> to_sreq(a, CANCEL_FETCH, 0)
        :: !owners[a] && parked[a] -> parked[a] = false; to_rreq(a, ANS_KVERR, R_CANCELLED)
        :: else -> skip
        fi
     :: m == DOWN_OWNER -> owners[a] = false
     fi;
     m = 0; a = 0 }
  /* the relay of the fetch to the owner it spawned (in the same handler as the spawn, but
     node::cancel, on another thread, may reach the new owner first) */
  :: atomic { relay[0] -> relay[0] = false; to_sreq(0, FETCH, 0) }
  :: atomic { relay[1] -> relay[1] = false; to_sreq(1, FETCH, 0) }
  /* the sweep: an offer's deadline passed while it waited in the book */
  :: atomic { !snd_dead && in_book[0] && DEADLINE_ARMED(0) && !s_dl[0] ->
              s_dl[0] = true; book_end(0, R_TIMED_OUT) }
  :: atomic { !snd_dead && in_book[1] && DEADLINE_ARMED(1) && !s_dl[1] ->
              s_dl[1] = true; book_end(1, R_TIMED_OUT) }
  /* park_expired: the fetch's deadline passed while it was parked */
  :: atomic { !snd_dead && parked[0] -> parked[0] = false; to_rreq(0, ANS_KVERR, R_TIMED_OUT) }
  :: atomic { !snd_dead && parked[1] -> parked[1] = false; to_rreq(1, ANS_KVERR, R_TIMED_OUT) }
  od
}

/* the sender terminates (stop or kill): its mailbox is bounced, parked fetches get no answer
   (no broken_promise in CAF 0.17), and D's watches of it fire */
inline sender_dies() {
  snd_dead = true;
  do
  :: nempty(snd_mb) -> snd_mb?km,ka;
     if
     :: km == FETCH -> to_rreq(ka, ANS_BOUNCED, 0)
     :: else -> skip
     fi
  :: else -> break
  od;
  for (j : 0 .. MAXR - 1) {
    parked[j] = false; owners[j] = false;
    if
    :: r_wp[j] -> to_rreq(j, DOWN_PEER, 0)
    :: else -> skip
    fi
  };
  km = 0; ka = 0; j = 0
}

/* ==== transport actor (P) =================================================================== */
proctype Transport() {
  mtype m;
  byte a;
end_loop:
  do
  :: atomic { nempty(tr_mb) -> tr_mb?m,a;
     if
     :: m == PUT || m == COPY ->            /* on_put / on_copy: posted to the engine */
        if
#ifndef MUTANT_POST_RETIRED  /* mutant: the transport ignores the ledger's retired tokens */
        :: s_retired[a / 2] ->               /* its request ended unreleased: refused */
           ops_out[a] = false; op_slot[a] = 0
#endif
        :: else ->
           assert(!tr_known[a]);            /* one batch of puts and one copy per token */
           assert(s_rel[a / 2] == 0);       /* P2: nothing reads released source memory, */
           assert(m == COPY || r_rel[a / 2] == 0 || d_revoked || d_dead);  /* nor writes a
                                                                    released destination, */
           assert(op_slot[a] == 0 || (slot_ret[a / 2] & (1 << op_slot[a])) == 0);  /* nor
                                                                  uses a slot given back */
           /* puts read a slot only once its copy completed (pump waits for the answer) */
           assert(m == COPY || op_slot[a] == 0 ||
                  !(ops_out[a - 1] && op_slot[a - 1] == op_slot[a]));
           posted[a] = true; tr_known[a] = true
        fi
     :: m == OP_OK || m == OP_ERR ->        /* op_done (token, is_put): answer the requester */
        if
        :: tr_known[a] ->
           tr_known[a] = false;
           if
           :: m == OP_OK -> to_sreq(a / 2, STEP_OK, a % 2)
           :: else -> to_sreq(a / 2, STEP_ERR, a % 2)
           fi
        :: else -> skip
        fi
     fi;
     m = 0; a = 0 }
  od
}

/* the transport terminates (stop): queued puts / copies are bounced (never posted), its
   promises are lost (no answer), the requests watching it get DOWN */
inline transport_dies() {
  tr_dead = true;
  do
  :: nempty(tr_mb) -> tr_mb?km,ka;
     if
     :: km == PUT || km == COPY ->
        ops_out[ka] = false; op_slot[ka] = 0; to_sreq(ka / 2, STEP_ERR, ka % 2)
     :: else -> skip
     fi
  :: else -> break
  od;
  for (j : 0 .. 2 * MAXR - 1) { tr_known[j] = false };
  for (j : 0 .. MAXR - 1) {
    if
    :: s_wt[j] -> to_sreq(j, DOWN_TRANSPORT, 0)
    :: else -> skip
    fi
  };
  km = 0; ka = 0; j = 0
}

/* ==== the engine's completions (UCX progress thread, copy engine) ========================== */
inline complete(o) {                   /* o: the op, OPI(request, kind) */
  posted[o] = false; ops_out[o] = false; op_slot[o] = 0;   /* the callback ran: quiescent */
  if
  :: o % 2 == KP -> ok_batches[o / 2]++; to_transport(OP_OK, o)
  :: o % 2 == KC -> to_transport(OP_OK, o)
  :: true -> to_transport(OP_ERR, o)       /* failed or cancelled */
  fi
}
/* The op ledger's word on a quarantined send (~request_owner retired its token): once the engine
   holds nothing of it, it is released, on the completing thread. Not after stop() took it. */
inline ledger_release(j) {
  s_quar[j] = false;
  handle_release(s_res[j], s_rel[j])
}
proctype Engine() {
end_idle:
  do
  :: atomic { !p_dead && posted[0] -> complete(0) }   /* request 0's copy */
  :: atomic { !p_dead && posted[1] -> complete(1) }   /* request 0's puts */
  :: atomic { !p_dead && posted[2] -> complete(2) }
  :: atomic { !p_dead && posted[3] -> complete(3) }
  :: atomic { !p_dead && !p_engine_gone && s_quar[0] && !posted[OPI(0, KC)] &&
              !posted[OPI(0, KP)] -> ledger_release(0) }
  :: atomic { !p_dead && !p_engine_gone && s_quar[1] && !posted[OPI(1, KC)] &&
              !posted[OPI(1, KP)] -> ledger_release(1) }
  od
}

/* ==== node::cancel on either side ========================================================== */

/* node::cancel of a send: an offer still in the book ends there; else its owner is asked */
inline cancel_send(j) {
  if
  :: in_book[j] -> book_end(j, R_CANCELLED)
  :: else -> to_sreq(j, CANCEL, 0)
  fi
}

proctype App() {
  bool sc[MAXR], rc[MAXR];
end_app:
  do
  :: atomic { ALLOW_CANCEL_S && s_spawned[0] && !sc[0] && !p_stopped && !p_dead ->
              sc[0] = true; cancel_send(0) }
  :: atomic { ALLOW_CANCEL_R && r_spawned[0] && !rc[0] && !d_stopped && !d_dead ->
              rc[0] = true; to_rreq(0, CANCEL, 0) }
  :: atomic { ALLOW_CANCEL_S && s_spawned[1] && !sc[1] && !p_stopped && !p_dead ->
              sc[1] = true; cancel_send(1) }
  :: atomic { ALLOW_CANCEL_R && r_spawned[1] && !rc[1] && !d_stopped && !d_dead ->
              rc[1] = true; to_rreq(1, CANCEL, 0) }
  od
}

/* ==== peer death ============================================================================ */
proctype Faults() {
  byte j;
  mtype km;
  byte ka;
  if
  :: atomic { ALLOW_KILL && !p_stopping && !d_dead ->  /* P killed: D's watches of P fire */
       p_dead = true; snd_dead = true; tr_dead = true;
       for (j : 0 .. MAXR - 1) {
         if
         :: r_wp[j] -> to_rreq(j, DOWN_PEER, 0)
         :: else -> skip
         fi
       }; j = 0 }
  :: atomic { ALLOW_KILL && !d_stopping && !p_dead ->  /* D killed: P's watches of its anchor */
       d_dead = true; d_anchor_dead = true; d_children_dead = true;
       for (j : 0 .. MAXR - 1) {
         if
         :: s_wf[j] -> to_sreq(j, DOWN_FETCHER, 0)
         :: else -> skip
         fi
       }; j = 0 }
  /* P's transport actor crashes (the supervisor restarts it; requests of the old one keep
     nothing but their DOWN): only with ALLOW_TRANSPORT_CRASH */
  :: atomic { ALLOW_TRANSPORT_CRASH && !p_stopping && !p_dead -> transport_dies() }
  :: skip
  fi
}

/* ==== node::stop() ========================================================================== */
proctype StopP() {
  byte j;
  mtype km;
  byte ka;
  if
  /* accepting = false; drain (any delay: the interleavings cover it); exit to every owner */
  :: atomic { ALLOW_STOP_P && !p_dead -> p_stopping = true }
  :: skip -> goto done
  fi;
  atomic {                                /* the book is closed: its offers end stopped */
    for (j : 0 .. MAXR - 1) {
      if
      :: in_book[j] -> book_end(j, R_STOPPED)
      :: else -> skip
      fi
    }; j = 0 }
  atomic {                                /* the supervisor exits, and its children */
    if
    :: !tr_dead -> transport_dies()       /* (unless it crashed before) */
    :: else -> skip
    fi;
    sender_dies() }
  /* await_all_actors_done */
  (!s_spawned[0] || s_ended[0]) && (!s_spawned[1] || s_ended[1]);
  atomic {
    /* the engine is destroyed: every operation completes, nothing touches memory any more */
    p_engine_gone = true;
    for (j : 0 .. 2 * MAXR - 1) { posted[j] = false; ops_out[j] = false; op_slot[j] = 0 };
    /* every request still unreleased (quarantined) is released (F22) */
    for (j : 0 .. MAXR - 1) {
      if
#ifndef MUTANT_STOP_NO_RELEASE
      :: s_spawned[j] && s_quar[j] -> handle_release(s_res[j], s_rel[j])
#endif
      :: else -> skip
      fi
    };
    p_stopped = true;
    /* P4 */
    for (j : 0 .. MAXR - 1) { assert(!s_spawned[j] || (s_res[j] == 1 && s_rel[j] == 1)) };
    j = 0 }
done:
  skip
}

proctype StopD() {
  byte j;
  if
  :: atomic { ALLOW_STOP_D && !d_dead -> d_stopping = true }
  :: skip -> goto done
  fi;
  atomic {                                /* the supervisor (anchor), receiver, transport exit */
    d_anchor_dead = true; d_children_dead = true;
    for (j : 0 .. MAXR - 1) {
      if
      :: s_wf[j] -> to_sreq(j, DOWN_FETCHER, 0)
      :: else -> skip
      fi
    }; j = 0 }
  (!r_spawned[0] || r_ended[0]) && (!r_spawned[1] || r_ended[1]);
  atomic {
    d_revoked = true;                     /* engine destroyed: its registrations are gone */
    for (j : 0 .. MAXR - 1) {
      if
#ifndef MUTANT_STOP_NO_RELEASE
      :: r_spawned[j] && r_quar[j] -> handle_release(r_res[j], r_rel[j])
#endif
      :: else -> skip
      fi
    };
    d_stopped = true;
    for (j : 0 .. MAXR - 1) { assert(!r_spawned[j] || (r_res[j] == 1 && r_rel[j] == 1)) };
    j = 0 }
done:
  skip
}

/* ==== at global quiescence ================================================================== */
#define S_SETTLED(j) (!s_spawned[j] || p_dead || (s_res[j] == 1 && (s_rel[j] == 1 || s_quar[j])))
#define R_SETTLED(j) (!r_spawned[j] || d_dead || (r_res[j] == 1 && (r_rel[j] == 1 || r_quar[j])))
#define SETTLED (S_SETTLED(0) && S_SETTLED(1) && R_SETTLED(0) && R_SETTLED(1))
#define S_STOP_OK(j) (!p_stopped || !s_spawned[j] || (s_res[j] == 1 && s_rel[j] == 1))
#define R_STOP_OK(j) (!d_stopped || !r_spawned[j] || (r_res[j] == 1 && r_rel[j] == 1))

/* a live request whose deadline can still fire (with ALLOW_DEADLINE 2 it fires on timeout) */
#define DL_PENDING(j) ((s_spawned[j] && !s_ended[j] && !p_dead && !s_dl[j]) || \
                       (r_spawned[j] && !r_ended[j] && !d_dead && !r_dl[j]))

proctype Final() {
  timeout && (ALLOW_DEADLINE == 1 || !(DL_PENDING(0) || DL_PENDING(1))) ->
  atomic {
    assert(SETTLED);                      /* P1: every handle resolved, released or quarantined */
    /* P releases every send it quarantined (the op ledger's word, or stop()), transport
       crashes included */
    assert(!s_quar[0] || s_rel[0] == 1 || p_dead);
    assert(!s_quar[1] || s_rel[1] == 1 || p_dead);
#ifdef STRICT_QUARANTINE
    /* the strict instance (README): without transport crashes, D quarantines only if P went
       away or stops, or D itself stops */
    assert(!r_quar[0] || d_stopping || p_dead || p_stopping);
    assert(!r_quar[1] || d_stopping || p_dead || p_stopping);
#endif
  }
}

/* send() and receive() of each request, then everything else, before anything moves */
init {
  atomic {
    s_spawned[0] = true; in_book[0] = true; SEND(snd_mb, ANNOUNCE, 0);
    r_spawned[0] = true; run RecvReq(0);
#if NREQ > 1
    s_spawned[1] = true; in_book[1] = true; SEND(snd_mb, ANNOUNCE, 1);
    r_spawned[1] = true; run RecvReq(1);
#endif
    run Sender(); run Transport(); run Engine(); run App();
    run Faults(); run StopP(); run StopD(); run Final()
  }
}

/* ==== LTL (verify.sh runs each with -N) ==================================================== */
ltl p1_resolve_once { [] (s_res[0] <= 1 && s_res[1] <= 1 && r_res[0] <= 1 && r_res[1] <= 1) }
ltl p1_settles { <> [] SETTLED }
ltl p4_stop { [] (S_STOP_OK(0) && S_STOP_OK(1) && R_STOP_OK(0) && R_STOP_OK(1)) }
