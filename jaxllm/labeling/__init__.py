"""Human preference labeling: the judgement store and its exported pairs, labeler agreement,
the local web app and its page."""
