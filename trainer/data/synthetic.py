"""Embedded synthetic resident-intruder recordings (the default data set).

The generator is deterministic by seed and built so that temporal context matters:

* Behaviour schedule: a semi-Markov chain per active mouse over
  other / investigation / mount / attack with log-normal bout lengths
  (`BOUTS`) and transition probabilities (`TRANSITIONS`). Expected frame shares with the
  defaults: other ~ 65 %, investigation ~ 25 %, mount ~ 5 %, attack ~ 3-4 %.
* Kinematics per behaviour: investigation = slow, nose held at the target's head, flank or
  anogenital region with 5-9 Hz sniffing head oscillations; attack = fast, erratic jumps
  close to the target with short pauses inside the bout (paused frames are still attack);
  mount = agent behind the target, bodies aligned, shortened (rearing) body with 4-6 Hz
  thrusts.
* Ambiguity (scaled by `difficulty`): "other" bouts contain sub-modes that look like a
  behaviour frame by frame -- approach before every social bout, passing close by,
  resting nose-to-body next to the target (huddle), following from behind -- so only the
  surrounding frames tell them apart.
* Tracking: 7-keypoint CalMS21 skeleton, per-keypoint Gaussian jitter (`jitter_px`),
  rare large outliers, missing-keypoint runs (NaN, more frequent when bodies overlap),
  identities never swapped.

With 2 mice only the resident -> intruder pair is labelled (CalMS21 style). With 3-4 mice
every mouse is active and every ordered (agent, target) pair is labelled: a frame gets the
agent's behaviour if the agent is directed at that target, else "other".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.recording import Recording

CALMS21_BODYPARTS = ["nose", "left_ear", "right_ear", "neck", "left_hip", "right_hip", "tail_base"]
CLASS_NAMES = ["other", "investigation", "mount", "attack"]  # seed V4 order
OTHER, INVESTIGATION, MOUNT, ATTACK = range(4)

# body template in body lengths, x forward (nose direction), y to the left
_TEMPLATE = np.array(
    [[0.50, 0.0], [0.33, 0.09], [0.33, -0.09], [0.27, 0.0], [-0.22, 0.13], [-0.22, -0.13], [-0.50, 0.0]],
    dtype=np.float64,
)
_HEAD = np.array([True, True, True, True, False, False, False])  # parts that turn with the head
_PIVOT = np.array([0.15, 0.0])  # head yaw pivot (neck joint), body lengths

# bout lengths: (median seconds, log-sd, minimum seconds)
BOUTS = {
    OTHER: (3.0, 0.7, 0.5),
    INVESTIGATION: (1.6, 0.6, 0.3),
    MOUNT: (2.0, 0.4, 0.8),
    ATTACK: (0.9, 0.5, 0.25),
}
# next-state probabilities after a bout of each state
TRANSITIONS = {
    OTHER: {INVESTIGATION: 0.78, MOUNT: 0.07, ATTACK: 0.15},
    INVESTIGATION: {OTHER: 0.86, MOUNT: 0.07, ATTACK: 0.07},
    MOUNT: {OTHER: 0.85, INVESTIGATION: 0.15},
    ATTACK: {OTHER: 0.8, INVESTIGATION: 0.2},
}
# "other" sub-modes: explore, rest, pass close by, huddle next to the target, follow it
_OTHER_MODES = ["explore", "rest", "pass", "huddle", "follow", "chase"]
_OTHER_MODE_P = np.array([0.40, 0.22, 0.10, 0.12, 0.10, 0.06])  # at difficulty 1


# ----------------------------------------------------------------------------- helpers


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def _unit(theta):
    return np.array([np.cos(theta), np.sin(theta)])


def _schedule(rng: np.random.Generator, T: int, fps: float) -> np.ndarray:
    """(T,) behaviour index per frame from the semi-Markov chain."""
    out = np.empty(T, dtype=np.int64)
    t, state = 0, OTHER
    while t < T:
        median, sd, minimum = BOUTS[state]
        dur = max(int(round(minimum * fps)), int(round(median * fps * np.exp(sd * rng.standard_normal()))))
        out[t : t + dur] = state
        t += dur
        nxt = TRANSITIONS[state]
        state = int(rng.choice(list(nxt), p=list(nxt.values())))
    return out


def _other_modes(rng, T, fps, difficulty) -> np.ndarray:
    """(T,) index into _OTHER_MODES, switching every 1-4 s."""
    p = _OTHER_MODE_P.copy()
    p[2:] *= difficulty
    p /= p.sum()
    out = np.empty(T, dtype=np.int64)
    t = 0
    while t < T:
        dur = int(rng.uniform(1.0, 4.0) * fps)
        out[t : t + dur] = rng.choice(len(p), p=p)
        t += dur
    return out


def _bout_starts(states: np.ndarray) -> np.ndarray:
    change = np.ones(len(states), dtype=bool)
    change[1:] = states[1:] != states[:-1]
    return np.flatnonzero(change)


class _Mouse:
    """Centroid, velocity, heading, head yaw and body length of one simulated mouse."""

    def __init__(self, rng, arena):
        self.length = rng.uniform(85, 105)  # px, nose to tail base
        self.pos = rng.uniform([0.2 * arena[0], 0.2 * arena[1]], [0.8 * arena[0], 0.8 * arena[1]])
        self.vel = np.zeros(2)
        self.theta = rng.uniform(-np.pi, np.pi)
        self.yaw = 0.0
        self.stretch = 1.0
        self.waypoint = self.pos.copy()
        self.speed_pref = rng.uniform(60, 160)

    def nose(self):
        return self.pos + 0.5 * self.length * self.stretch * _unit(self.theta)

    def point(self, frac):
        """A point on the body midline, frac in body lengths (+0.5 nose, -0.5 tail base)."""
        return self.pos + frac * self.length * _unit(self.theta)

    def keypoints(self) -> np.ndarray:
        tpl = _TEMPLATE * np.array([self.stretch, 1.0])
        rel = tpl - _PIVOT
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        head = rel[_HEAD] @ np.array([[c, s], [-s, c]]) + _PIVOT
        tpl = tpl.copy()
        tpl[_HEAD] = head
        c, s = np.cos(self.theta), np.sin(self.theta)
        rot = np.array([[c, s], [-s, c]])
        return self.pos + (tpl * self.length) @ rot


def _steer(m: _Mouse, v_des, gain, fps, rng, noise):
    m.vel += gain * (v_des - m.vel) + rng.normal(0, noise, 2)
    m.pos = m.pos + m.vel / fps


def _turn_towards(m: _Mouse, theta_des, rate, rng, noise=0.03):
    m.theta = _wrap(m.theta + np.clip(_wrap(theta_des - m.theta), -rate, rate) + rng.normal(0, noise))


def _go_to(m: _Mouse, goal, max_speed, gain=3.0):
    d = goal - m.pos
    v = d * gain
    n = np.linalg.norm(v)
    return v if n <= max_speed else v * (max_speed / n)


# ----------------------------------------------------------------------------- simulation


def _simulate(rng, T, fps, num_mice, arena, difficulty):
    """Returns keypoints (T, M, 7, 2), per-mouse states (T, M), per-mouse targets (T, M), occlusion (T, M)."""
    active = list(range(num_mice)) if num_mice > 2 else [0]
    mice = [_Mouse(rng, arena) for _ in range(num_mice)]
    states = np.zeros((T, num_mice), dtype=np.int64)
    targets = np.zeros((T, num_mice), dtype=np.int64)
    modes = np.zeros((T, num_mice), dtype=np.int64)
    for a in range(num_mice):
        modes[:, a] = _other_modes(rng, T, fps, difficulty)
        if a in active:
            states[:, a] = _schedule(rng, T, fps)
            # each bout picks a target (fixed for 2 mice); approach precedes social bouts
            for s in _bout_starts(states[:, a]):
                others = [j for j in range(num_mice) if j != a]
                targets[s:, a] = rng.choice(others)
        else:
            targets[:, a] = 0
    # approach: the last 0.5-1.5 s of an "other" bout before a social bout steers to the target
    approach = np.zeros((T, num_mice), dtype=bool)
    region = np.zeros((T, num_mice))  # investigation goal along the target midline (+0.5 nose)
    for a in active:
        starts = _bout_starts(states[:, a])
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else T
            if states[s, a] != OTHER and s > 0:
                n = int(rng.uniform(0.5, 1.5) * fps)
                approach[max(0, s - n) : s, a] = states[s - 1, a] == OTHER
            if states[s, a] == INVESTIGATION:
                region[s:end, a] = rng.choice([0.5, 0.0, -0.5], p=[0.4, 0.2, 0.4])
    # annotators mark a bout a few frames before the motion changes: the kinematics of a
    # new bout start 2-9 frames after its label (only the frames after it reveal the switch)
    labels_states = states.copy()
    for a in active:
        for s in _bout_starts(labels_states[:, a])[1:]:
            lag = int(round(rng.integers(2, 10) * difficulty))
            states[s : s + lag, a] = labels_states[s - 1, a]
    # sniffing comes in bursts (0.3-0.8 s on, 0.2-0.6 s off)
    sniff_on = np.zeros((T, num_mice), dtype=bool)
    for a in range(num_mice):
        t0, on = 0, True
        while t0 < T:
            dur = int(rng.uniform(0.3, 0.8) * fps) if on else int(rng.uniform(0.2, 0.6) * fps)
            sniff_on[t0 : t0 + dur, a] = on
            t0, on = t0 + max(dur, 1), not on
    kp = np.empty((T, num_mice, len(CALMS21_BODYPARTS), 2))
    occl = np.zeros((T, num_mice))
    margin = 40.0
    sniff_f = rng.uniform(5, 9, num_mice)
    thrust_f = rng.uniform(4, 6, num_mice)
    pause = np.zeros(num_mice, dtype=int)
    jump = [np.zeros(2) for _ in range(num_mice)]

    for t in range(T):
        time = t / fps
        for a, m in enumerate(mice):
            st = states[t, a]
            tgt = mice[targets[t, a]]
            mode = _OTHER_MODES[modes[t, a]]
            attacked = any(states[t, b] == ATTACK and targets[t, b] == a for b in active if b != a)
            mounted = any(states[t, b] == MOUNT and targets[t, b] == a for b in active if b != a)
            chased = any(
                states[t, b] == OTHER and _OTHER_MODES[modes[t, b]] == "chase" and targets[t, b] == a
                for b in active if b != a
            )
            m.stretch += 0.2 * (1.0 - m.stretch)
            if st == OTHER and approach[t, a]:
                goal = tgt.pos + 0.6 * tgt.length * _unit(tgt.theta + rng.normal(0, 0.8))
                _steer(m, _go_to(m, goal, rng.uniform(150, 260)), 0.25, fps, rng, 4.0)
                _turn_towards(m, np.arctan2(*(goal - m.pos)[::-1]), 0.3, rng)
                m.yaw *= 0.8
            elif st == INVESTIGATION:
                # nose slides along the target's midline around the chosen region
                frac = np.clip(region[t, a] + 0.15 * np.sin(0.7 * time + a), -0.55, 0.55)
                goal_nose = tgt.point(frac) + rng.normal(0, 2.0, 2)
                goal = goal_nose - 0.5 * m.length * _unit(m.theta)
                _steer(m, _go_to(m, goal, 60.0), 0.3, fps, rng, 2.0)
                _turn_towards(m, np.arctan2(*(goal_nose - m.pos)[::-1]), 0.15, rng)
                m.yaw = 0.14 * sniff_on[t, a] * np.sin(2 * np.pi * sniff_f[a] * time) + rng.normal(0, 0.03)
            elif st == MOUNT:
                goal = tgt.pos - 0.3 * tgt.length * _unit(tgt.theta)
                goal = goal + 4.0 * np.sin(2 * np.pi * thrust_f[a] * time) * _unit(tgt.theta)
                _steer(m, _go_to(m, goal, 120.0, gain=6.0), 0.5, fps, rng, 2.0)
                _turn_towards(m, tgt.theta, 0.2, rng, 0.02)
                m.stretch += 0.3 * (0.72 - m.stretch)
                m.yaw *= 0.7
                occl[t, a] = occl[t, targets[t, a]] = 1.0
            elif st == ATTACK:
                if pause[a] > 0:  # brief pauses inside an attack bout are still attack
                    pause[a] -= 1
                    _steer(m, np.zeros(2), 0.6, fps, rng, 10.0)
                else:
                    if rng.random() < 0.15:
                        jump[a] = _unit(rng.uniform(-np.pi, np.pi)) * rng.uniform(150, 400)
                    pull = _go_to(m, tgt.pos, 500.0, gain=10.0)
                    _steer(m, 0.5 * jump[a] + pull, 0.5, fps, rng, 20.0)
                    if rng.random() < 0.08:
                        pause[a] = int(rng.integers(4, 11))
                _turn_towards(m, m.theta + rng.normal(0, 0.5), 0.5, rng, 0.1)
                m.yaw += rng.normal(0, 0.08) - 0.2 * m.yaw
                occl[t, a] = occl[t, targets[t, a]] = 1.0
            elif attacked:  # flee erratically
                away = m.pos - mice[[b for b in active if states[t, b] == ATTACK and targets[t, b] == a][0]].pos
                v = away / (np.linalg.norm(away) + 1e-6) * rng.uniform(100, 300) + rng.normal(0, 150, 2)
                _steer(m, v, 0.6, fps, rng, 20.0)
                _turn_towards(m, np.arctan2(v[1], v[0]), 0.6, rng, 0.2)
            elif chased:  # run away fast but in a straight line
                v = _unit(m.theta) * rng.uniform(250, 400)
                _steer(m, v, 0.3, fps, rng, 10.0)
                _turn_towards(m, m.theta, 0.0, rng, 0.05)
            elif mounted:  # mostly still while mounted
                _steer(m, np.zeros(2), 0.4, fps, rng, 2.0)
                m.yaw *= 0.9
            else:  # other: sub-mode kinematics
                if mode == "explore":
                    if np.linalg.norm(m.waypoint - m.pos) < 30 or rng.random() < 0.004:
                        m.waypoint = rng.uniform([margin, margin], [arena[0] - margin, arena[1] - margin])
                        m.speed_pref = rng.uniform(60, 200)
                    v = _go_to(m, m.waypoint, m.speed_pref)
                    _steer(m, v, 0.15, fps, rng, 6.0)
                    m.yaw += rng.normal(0, 0.04) - 0.1 * m.yaw
                elif mode == "rest":
                    _steer(m, np.zeros(2), 0.3, fps, rng, 1.0)
                    m.yaw += rng.normal(0, 0.02) - 0.05 * m.yaw
                elif mode == "pass":
                    side = 0.6 * tgt.length * _unit(tgt.theta + np.pi / 2)
                    goal = tgt.pos + side + 200 * _unit(m.theta)
                    _steer(m, _go_to(m, goal, 180.0), 0.2, fps, rng, 5.0)
                    m.yaw += rng.normal(0, 0.04) - 0.1 * m.yaw
                elif mode == "huddle":
                    goal_nose = tgt.point(0.1) + 0.25 * tgt.length * _unit(tgt.theta + np.pi / 2)
                    goal = goal_nose - 0.5 * m.length * _unit(m.theta)
                    _steer(m, _go_to(m, goal, 80.0), 0.2, fps, rng, 1.5)
                    m.yaw += rng.normal(0, 0.05) - 0.1 * m.yaw  # looks around, no rhythmic sniffing
                elif mode == "follow":
                    goal = tgt.pos - 1.0 * tgt.length * _unit(tgt.theta)
                    _steer(m, _go_to(m, goal, 220.0), 0.2, fps, rng, 4.0)
                    m.yaw *= 0.9
                else:  # chase: fast and close behind the target, straight, no contact
                    goal = tgt.pos - 0.7 * tgt.length * _unit(tgt.theta)
                    _steer(m, _go_to(m, goal, 450.0, gain=6.0), 0.4, fps, rng, 8.0)
                    m.yaw *= 0.9
                speed = np.linalg.norm(m.vel)
                if mode == "huddle":
                    _turn_towards(m, np.arctan2(*(tgt.pos - m.pos)[::-1]), 0.05, rng, 0.02)
                elif speed > 20:
                    _turn_towards(m, np.arctan2(m.vel[1], m.vel[0]), 0.25, rng)
                else:
                    _turn_towards(m, m.theta, 0.0, rng, 0.01)
                m.stretch += 0.1 * (min(1.12, 1.0 + speed / 2000) - m.stretch)
            # walls: reflect the centroid, damp the velocity
            for k in range(2):
                if m.pos[k] < margin or m.pos[k] > arena[k] - margin:
                    m.pos[k] = np.clip(m.pos[k], margin, arena[k] - margin)
                    m.vel[k] *= -0.5
            m.yaw = float(np.clip(m.yaw, -0.6, 0.6))
            kp[t, a] = m.keypoints()
    return kp, states, targets, occl


def _tracking_noise(rng, kp, occl, jitter_px, missing_rate):
    """Jitter, rare outliers and missing-keypoint runs (NaN), more of them under occlusion."""
    T, M, B, _ = kp.shape
    kp = kp + rng.normal(0, jitter_px, kp.shape)
    outlier = rng.random((T, M, B)) < 0.002
    kp[outlier] += rng.normal(0, 25.0, (int(outlier.sum()), 2))
    start_p = missing_rate * (1.0 + 4.0 * occl[:, :, None])
    starts = rng.random((T, M, B)) < start_p
    missing = np.zeros((T, M, B), dtype=bool)
    for t, m, b in zip(*np.nonzero(starts)):
        missing[t : t + int(rng.geometric(0.2)), m, b] = True
    kp[missing] = np.nan
    return kp.astype(np.float32)


# ----------------------------------------------------------------------------- public


def generate_recording(
    video_id: str,
    *,
    frames: int = 3000,
    num_mice: int = 2,
    fps: float = 30.0,
    arena_size=(1024.0, 570.0),
    jitter_px: float = 3.0,
    missing_rate: float = 0.004,
    difficulty: float = 1.0,
    seed: int = 0,
) -> Recording:
    """Simulate one resident-intruder video.

    Args:
        frames: number of frames T.
        num_mice: 2 (resident -> intruder labelled) or 3-4 (every ordered pair labelled).
        fps: frame rate; bout lengths and speeds are in seconds and px/s, so any fps works.
        arena_size: (width, height) in pixels.
        jitter_px: std of Gaussian tracking noise per keypoint, pixels.
        missing_rate: per-frame probability that a keypoint starts a missing run (x5 when
            bodies overlap during mount/attack); runs last 5 frames on average.
        difficulty: scales how often "other" contains behaviour-like sub-modes (huddle,
            pass-by, follow).
        seed: generator seed; the same seed gives the same recording.

    Returns:
        Recording with keypoints (T, M, 7, 2) and labels (T, P), classes CLASS_NAMES.
    """
    rng = np.random.default_rng(seed)
    arena = np.asarray(arena_size, dtype=np.float64)
    kp, states, targets, occl = _simulate(rng, frames, fps, num_mice, arena, difficulty)
    kp = _tracking_noise(rng, kp, occl, jitter_px, missing_rate)
    if num_mice == 2:
        pairs = [(0, 1)]
        mouse_ids = ["resident", "intruder"]
    else:
        pairs = [(a, t) for a in range(num_mice) for t in range(num_mice) if a != t]
        mouse_ids = [f"mouse{i + 1}" for i in range(num_mice)]
    labels = np.zeros((frames, len(pairs)), dtype=np.int64)
    for p, (a, t) in enumerate(pairs):
        labels[:, p] = np.where(targets[:, a] == t, states[:, a], OTHER)
    return Recording(
        video_id=video_id,
        keypoints=kp,
        fps=fps,
        mouse_ids=mouse_ids,
        bodyparts=list(CALMS21_BODYPARTS),
        pairs=pairs,
        labels=labels,
        class_names=list(CLASS_NAMES),
        meta={"source": "synthetic", "arena_size": [float(x) for x in arena], "seed": seed},
    )


@dataclass
class SyntheticVideo:
    """One video of a synthetic data set, generated on `read()` (pickles: pool workers generate it)."""

    video_id: str
    kwargs: dict

    @property
    def bodyparts(self) -> list[str]:
        return list(CALMS21_BODYPARTS)

    def read(self) -> Recording:
        return generate_recording(self.video_id, **self.kwargs)


def synthetic_videos(num_videos: int, *, seed: int = 0, frames: int = 3000, **kwargs) -> list[SyntheticVideo]:
    """The videos of `generate_dataset`, not generated yet; video i uses seed (seed, i) so sets nest."""
    return [
        SyntheticVideo(f"synthetic_{i:03d}",
                       dict(frames=frames, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), **kwargs))
        for i in range(num_videos)
    ]


def generate_dataset(
    num_videos: int, *, seed: int = 0, frames: int = 3000, **kwargs
) -> list[Recording]:
    """`num_videos` independent recordings; video i uses seed (seed, i) so sets nest."""
    return [v.read() for v in synthetic_videos(num_videos, seed=seed, frames=frames, **kwargs)]


def _options(data) -> dict:
    s = data.synthetic
    return dict(seed=s.seed, frames=s.frames_per_video, num_mice=s.num_mice, fps=s.fps,
                arena_size=tuple(s.arena_size), jitter_px=s.jitter_px, missing_rate=s.missing_rate,
                difficulty=s.difficulty)


def list_synthetic(path: str, *, data, fps: float) -> list[SyntheticVideo]:
    """Lister-table entry: the videos `read_synthetic` generates, each generated on `read()`."""
    return synthetic_videos(data.synthetic.num_videos, **_options(data))


def read_synthetic(path: str, *, data, fps: float) -> list[Recording]:
    """Reader-table entry: generate the data set described by `data.synthetic` (path unused)."""
    return generate_dataset(data.synthetic.num_videos, **_options(data))
