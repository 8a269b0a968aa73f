"""The report: blocks rendered to Markdown and HTML (`render`), plots and the one PNG writer
(`plots`), number formatting (`fmt`), and the speedrun's report card built from stage sections
(`build`)."""
