"""The "explain why" exercises: multiple-choice questions, shown by :func:`question` and
checked by :func:`check_choice`, which explains a wrong answer."""

from __future__ import annotations

from typing import Any

from ._common import ExerciseError, _ok

__all__ = ["QUESTIONS", "question", "check_choice"]

#: Multiple-choice questions: id -> prompt, choices, the correct letter, and feedback for
#: each wrong letter (what that answer gets wrong).
QUESTIONS: dict[str, dict[str, Any]] = {
    # --- Hinton KD (notebook 01)
    "kd_t_squared": {
        "prompt": "Why is Hinton's soft loss multiplied by T**2?",
        "choices": {
            "a": "To sharpen the teacher's distribution.",
            "b": "To make the loss positive.",
            "c": "To keep the soft term's gradients on the same scale whatever T is.",
            "d": "Because KL divergence is measured in nats.",
        },
        "correct": "c",
        "explanation": "The gradient of KL(p_T || p_S) w.r.t. the student's logits is "
        "(p_S - p_T) / T, and p_S - p_T itself shrinks like 1/T for large T, so the bare KL's "
        "gradient falls like 1/T^2. Times T**2 it is T * (p_S - p_T), which tends to a limit: "
        "changing T does not silently re-weight the soft term against the cross-entropy.",
        "feedback": {
            "a": "Sharpening (or softening) is what dividing the logits by T does; T**2 "
            "multiplies the loss afterwards.",
            "b": "KL is already >= 0; a positive factor changes its scale, not its sign.",
            "d": "The unit does not depend on T; the factor is about gradient scale.",
        },
    },
    "kd_ce_vs_kl": {
        "prompt": "You train with cross-entropy against the teacher's soft targets instead of "
        "KL. What changes?",
        "choices": {
            "a": "The gradients w.r.t. the student.",
            "b": "Only the logged value: it is higher by the teacher's entropy.",
            "c": "Nothing at all.",
            "d": "The optimum: the student now matches the teacher's argmax only.",
        },
        "correct": "b",
        "explanation": "CE(p_T, p_S) = H(p_T) + KL(p_T || p_S), and H(p_T) does not depend on "
        "the student: same gradients, but the logged loss never reaches 0.",
        "feedback": {
            "a": "The extra term, the teacher's entropy, does not depend on the student, so its "
            "gradient is zero.",
            "c": "The logged value differs by the teacher's entropy: a KD curve that does not "
            "approach 0 is the telltale sign.",
            "d": "Both losses are minimized exactly at p_S = p_T.",
        },
    },
    "reduction_bug_silent": {
        "prompt": "Why does nn.KLDivLoss() with its default reduction often go unnoticed in a KD "
        "training script?",
        "choices": {
            "a": "Training still runs; the soft term is just K times weaker, like a smaller alpha.",
            "b": "It raises a warning that is easy to ignore.",
            "c": "It only matters for the teacher.",
            "d": "The default reduction is 'batchmean'.",
        },
        "correct": "a",
        "explanation": "Nothing crashes: the gradient of the KD term is divided by the number of "
        "classes, which silently changes the CE/KD balance.",
        "feedback": {
            "b": "Recent PyTorch warns only that 'mean' does not match the mathematical "
            "definition; the silent part is the scale of the loss, which no error reports.",
            "c": "The teacher gets no gradient at all; the bug scales the student's loss.",
            "d": "The default is 'mean', which divides by B*K.",
        },
    },
    # --- activation AT (notebook 02)
    "at_normalize": {
        "prompt": "Why are attention maps divided by their L2 norm before comparing them?",
        "choices": {
            "a": "To speed up training.",
            "b": "To handle student and teacher layers with different channel counts.",
            "c": "So the maps sum to 1, like probabilities.",
            "d": "So the loss compares where the networks look, not how large their activations "
            "are.",
        },
        "correct": "d",
        "explanation": "Activation scales differ between networks and change during training; "
        "without the normalization the loss chases the scale and, as the paper reports, training "
        "fails.",
        "feedback": {
            "a": "It costs a little; it is there for what it compares.",
            "b": "The channel reduction (sum/mean/max over channels) handles that: the maps are "
            "per position whatever the channel count.",
            "c": "Unit L2 norm is not unit sum; the paper uses the L2 norm.",
        },
    },
    "at_channels": {
        "prompt": "How can AT compare a 16-channel student layer with a 32-channel teacher layer?",
        "choices": {
            "a": "A learned 1x1 convolution projects the student's channels.",
            "b": "It cannot; the layers must have the same width.",
            "c": "Each map reduces its channels to one value per position, so only H x W must "
            "agree (and pooling fixes that).",
            "d": "The teacher's extra channels are dropped.",
        },
        "correct": "c",
        "explanation": "F(A) sums (or averages, or maxes) |A|^p over channels: the result is [H, "
        "W] for any C.",
        "feedback": {
            "a": "That is FitNets-style feature matching; AT needs no extra parameters.",
            "b": "Width may differ; the maps are per position.",
            "d": "Every channel contributes to the channel reduction.",
        },
    },
    "at_p": {
        "prompt": "What does a larger p in |A|^p do to the attention map?",
        "choices": {
            "a": "It puts more weight on the most active positions (a sharper map).",
            "b": "It blurs the map.",
            "c": "Nothing once the map is normalized.",
            "d": "It changes the map's spatial size.",
        },
        "correct": "a",
        "explanation": "Raising to a higher power widens the gap between strong and weak "
        "activations; F_max^p is the extreme of that.",
        "feedback": {
            "b": "The opposite: small values shrink relative to large ones.",
            "c": "Normalization removes the overall scale, not the relative contrast that p sets.",
            "d": "The map is [H, W] whatever p is.",
        },
    },
    # --- gradient AT (notebook 03)
    "grad_create_graph": {
        "prompt": "GradientAT computes the student's input gradient J_S with create_graph=True. "
        "What would go wrong with create_graph=False?",
        "choices": {
            "a": "J_S would be computed in lower precision.",
            "b": "The teacher's weights would receive gradients.",
            "c": "J_S would be a constant with no history: the penalty would send no gradient to "
            "the student's weights.",
            "d": "Nothing: create_graph only saves memory.",
        },
        "correct": "c",
        "explanation": "The penalty depends on the weights only through J_S, so its gradient is "
        "a second derivative, which autograd can take only through a recorded backward pass "
        "(double backprop).",
        "feedback": {
            "a": "create_graph says nothing about the dtype; precision is set by autocast.",
            "b": "J_T is detached whatever create_graph is for the student.",
            "d": "It costs memory, but it is what makes the penalty trainable at all.",
        },
    },
    # --- CAM and CAT-KD (notebook 04)
    "cat_r1": {
        "prompt": "CAT-KD pools every class activation map to R x R. With R = 1, what does its "
        "loss compare?",
        "choices": {
            "a": "Nothing useful: a 1x1 map has no layout, so the loss is always 0.",
            "b": "The activation attention maps of notebook 02.",
            "c": "Where the object is, at the coarsest scale.",
            "d": "The student's and the teacher's bias-free logits (a squared error).",
        },
        "correct": "d",
        "explanation": "The mean of a class map over the positions is that class's logit without "
        "the bias, so at R = 1 CAT is the MSE of the logits; larger R adds the coarse layout of "
        "the evidence on top of that.",
        "feedback": {
            "a": "A 1x1 map still has a value, the map's mean, and the student's and teacher's "
            "means differ.",
            "b": "AT's maps reduce the channels of a feature tensor and carry no class; CAMs are "
            "per class.",
            "c": "One cell cannot say where anything is; it only says how much evidence there is "
            "overall.",
        },
    },
    "cam_bias": {
        "prompt": "CAT-KD turns the classifier into a 1x1 convolution WITHOUT bias. Why drop the "
        "bias?",
        "choices": {
            "a": "To save parameters.",
            "b": "So that each class's logit is exactly the average of its CAM: a bias is one "
            "number per class that belongs to no position.",
            "c": "Because a bias would make the CAMs negative.",
            "d": "Biases cannot be learned by a 1x1 convolution.",
        },
        "correct": "b",
        "explanation": "With the bias, z_k = mean CAM_k + b_k: part of the decision would not be "
        "in the maps. Without it the maps hold all of it, and transferring them transfers the "
        "decision.",
        "feedback": {
            "a": "K numbers out of hundreds of thousands; that is not the point.",
            "c": "A bias shifts a logit; CAMs are negative wherever the weighted features are, "
            "bias or not.",
            "d": "nn.Conv2d has a bias by default; CAT-KD switches it off on purpose.",
        },
    },
    # --- AFD / AFT-KD (notebook 05)
    "aft_mask_gradient": {
        "prompt": "With gradient='none', the student's binary mask is a constant. What does the "
        "mask part of the AFB loss still do to the student?",
        "choices": {
            "a": "Nothing: a constant contributes no gradient.",
            "b": "It trains the student's classifier to produce the teacher's mask.",
            "c": "It shifts the target of the student's features: where the teacher's mask is on "
            "and the student's is off, ReLU(PreF) is pushed up (and down in the opposite case).",
            "d": "It makes the loss non-differentiable, so training stops.",
        },
        "correct": "c",
        "explanation": "With AFB = mask + ReLU(PreF), the squared error is ((m_S - m_T) + (r_S - "
        "r_T))^2: the mask difference acts as an offset on the features' target, so the "
        "teacher's mask still steers where the student activates.",
        "feedback": {
            "a": "The constant is inside the square, next to the features that do get a "
            "gradient: it changes their target.",
            "b": "No gradient passes the hard step, so the classifier gets none from the mask "
            "(that is what gradient='ste' changes).",
            "d": "The mask is simply a constant; the feature part keeps its gradient.",
        },
    },
    "aft_weights": {
        "prompt": "After some epochs the cross-entropy is at 40% of its first-epoch value and "
        "the AFB loss at 80% of its own. Which term gets the larger weight next epoch?",
        "choices": {
            "a": "The AFB loss: its decay rate is larger (0.8 vs 0.4), so beta = 0.8 / 0.6.",
            "b": "The cross-entropy: it is learning faster, so it deserves more weight.",
            "c": "Both get 1: the weights always sum to 2.",
            "d": "It depends on which loss is numerically larger.",
        },
        "correct": "a",
        "explanation": "beta = 0.8 / ((0.4 + 0.8) / 2) = 1.33 and alpha = 0.67: the weights move "
        "towards the term that has fallen least, as in Dynamic Weight Average.",
        "feedback": {
            "b": "The opposite: a term that falls fast has a small rate L / L^0, hence a small "
            "weight.",
            "c": "They sum to 2, but are equal only when both terms have fallen by the same "
            "factor.",
            "d": "The rates are ratios to each term's own first value, so the raw sizes cancel "
            "(which also means the weights cannot fix a mismatch of scales).",
        },
    },
    "aft_scale": {
        "prompt": "The AFB loss starts 100 times larger than the cross-entropy. What do the "
        "adaptive weights do about it?",
        "choices": {
            "a": "They rescale it to the cross-entropy's size.",
            "b": "Nothing: they depend only on L / L^0, so a constant factor on a loss leaves "
            "them unchanged; the AFB term keeps dominating the gradient.",
            "c": "They set beta to 1/100.",
            "d": "They stop the AFB term until the cross-entropy catches up.",
        },
        "correct": "b",
        "explanation": "Multiplying a loss by c multiplies L and L^0 alike: the rate, and so the "
        "weight, is unchanged. The weights balance speeds, not sizes; the size of each term is "
        "still set by how it is defined (or by a fixed factor).",
        "feedback": {
            "a": "alpha and beta average to 1 whatever the losses' sizes are.",
            "c": "beta comes from the rate L / L^0, which a constant factor does not change.",
            "d": "Both weights stay positive; there is no such switch.",
        },
    },
    # --- ViT attention transfer (notebook 06)
    "copy_needs_teacher": {
        "prompt": "Why does an attention-copy student need its teacher at test time?",
        "choices": {
            "a": "In the copied layers its own queries and keys were never used or trained, so "
            "it has no attention pattern of its own there.",
            "b": "Its weights are stored inside the teacher.",
            "c": "The teacher's logits are averaged with the student's.",
            "d": "It does not: the copied maps are saved once after training.",
        },
        "correct": "a",
        "explanation": "Attention maps depend on the image, so they cannot be stored once; the "
        "student only learned to use maps computed by the teacher for each input, and its own Q "
        "and K received no gradient. Attention distillation avoids this: its student computes "
        "the maps itself and runs alone.",
        "feedback": {
            "b": "The student has all its own weights; what it lacks is a trained Q/K.",
            "c": "Only the teacher's attention probabilities are used, never its logits.",
            "d": "Each image has its own attention maps: they are recomputed for every input.",
        },
    },
    "fused_attention_maps": {
        "prompt": "Why does reading a ViT's attention maps cost memory that "
        "F.scaled_dot_product_attention avoids?",
        "choices": {
            "a": "The fused kernel uses lower precision.",
            "b": "The explicit path stores the queries and keys twice.",
            "c": "Hooks copy the whole model.",
            "d": "The fused kernel computes softmax(QK^T)V block by block and never stores the "
            "(N, N) matrix, which the explicit path must keep (for the hook and for backward), "
            "per head and per layer.",
        },
        "correct": "d",
        "explanation": "The maps grow like N^2 per head: 65 tokens give 4,225 numbers per head "
        "and image, 577 tokens (a 24x24 grid) 333,000. The fused kernel keeps only O(N) "
        "statistics per row and recomputes the rest in the backward pass.",
        "feedback": {
            "a": "On a CPU both paths run in float32; the difference is what is stored.",
            "b": "Both paths keep Q, K and V once; the extra memory is the (N, N) maps.",
            "c": "A forward hook only keeps a reference to the module's output.",
        },
    },
    # --- the leaderboard (notebook 07)
    "lb_seeds": {
        "prompt": "Over 3 seeds, KD scores 83.0 ± 2.6 % and AT 82.1 ± 1.9 % (mean ± sample std). "
        "What can you conclude?",
        "choices": {
            "a": "KD is better than AT on this setting.",
            "b": "The std is noise and can be ignored; only the means matter.",
            "c": "AT is better, because its results vary less.",
            "d": "Nothing yet: the difference is smaller than the spread between seeds; more "
            "seeds (or paired runs with the same seeds) are needed to rank them.",
        },
        "correct": "d",
        "explanation": "A gap of 0.9 points against seed-to-seed spreads of 2 to 3 points is "
        "well within what reshuffling the seeds alone produces; papers report medians or means "
        "of 5 runs for that reason.",
        "feedback": {
            "a": "A higher mean over 3 seeds is not evidence when the std is three times the "
            "difference: another 3 seeds could reverse it.",
            "b": "The std is what tells a real difference from luck.",
            "c": "A smaller spread says the method is steadier, not that it is more accurate.",
        },
    },
    "lb_pick": {
        "prompt": "The teacher is a VGG-13, the student a MobileNetV2 (different families, "
        "different stages). Which transfer is the safest first choice?",
        "choices": {
            "a": "Activation AT on the group outputs.",
            "b": "Hinton KD on the logits.",
            "c": "Gradient AT.",
            "d": "Copying the teacher's attention maps into the student.",
        },
        "correct": "b",
        "explanation": "KD only needs the two networks to share the classes. On CIFAR-100 "
        "(RepDistiller) this pair gets 67.37 % with KD, against 64.60 % alone and 59.40 % with "
        "AT: matching maps position by position between unlike stages hurt.",
        "feedback": {
            "a": "AT pairs stages by position; between unlike architectures the maps do not "
            "correspond, and RepDistiller measured AT below the student alone here.",
            "c": "Gradient AT matches input gradients, costs two to three times a step, and its "
            "gains in the paper were small even between similar networks.",
            "d": "Attention copy needs transformers with the same attention shapes.",
        },
    },
    "lb_cost": {
        "prompt": "Gradient AT costs about 3x the time of plain training per epoch. How do you "
        "compare it fairly with KD on a fixed compute budget?",
        "choices": {
            "a": "Give KD (and the student alone) the same wall-clock time, i.e. more epochs, "
            "and compare at equal cost as well as at equal epochs.",
            "b": "Same number of epochs for both: that is what papers do.",
            "c": "Ignore cost: accuracy is all that counts.",
            "d": "Divide gradient AT's accuracy by 3.",
        },
        "correct": "a",
        "explanation": "Accuracy at equal epochs answers 'which loss teaches more per epoch'; a "
        "user with a budget asks 'which is better for the same time'. The accuracy-vs-cost "
        "figure shows both.",
        "feedback": {
            "b": "Equal epochs hides the cost: a slower method may lose to a cheaper one given "
            "the same time.",
            "c": "On a CPU or a shared GPU the time is the budget.",
            "d": "Accuracy does not scale with time; compare at equal time instead.",
        },
    },
}


def _question_or_error(question_id: str) -> dict[str, Any]:
    if question_id not in QUESTIONS:
        raise ValueError(
            f"unknown question {question_id!r}; valid ids: {', '.join(sorted(QUESTIONS))}"
        )
    return QUESTIONS[question_id]


def question(question_id: str) -> str:
    """The question's text with its choices (printed, and returned)."""
    q = _question_or_error(question_id)
    lines = [q["prompt"]] + [f"  {k}) {v}" for k, v in q["choices"].items()]
    text = "\n".join(lines)
    print(text)
    return text


def check_choice(question_id: str, answer: str) -> None:
    """Check a multiple-choice answer: a letter (``"b"``, ``"B"`` or ``"b)"`` all work).

    Raises:
        ExerciseError: for a wrong answer, with feedback on that answer; or for a letter
            that is not one of the choices.
        ValueError: for an unknown question id (the message lists the valid ones).
    """
    q = _question_or_error(question_id)
    letter = str(answer).strip().lower().rstrip(").:").strip()
    if letter not in q["choices"]:
        raise ExerciseError(
            f"answer with one of the letters {', '.join(q['choices'])}; got {answer!r}"
        )
    if letter != q["correct"]:
        raise ExerciseError(f"not {letter}): {q['feedback'][letter]}")
    _ok(f"{letter}) is right. {q['explanation']}")
